//! CUDA-graph replay of the forward: captured once per workspace (B, N), then one launch.

use muse_reference::{Error, Result};
use ndarray::{Array3, ArrayView2};

use super::CudaModel;

/// A captured forward (CUDA graph) of one workspace, replayed by [`CudaModel::enqueue_graph`].
pub(super) struct Graph {
    graph: cust::sys::CUgraph,
    exec: cust::sys::CUgraphExec,
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both handles were created by cuStreamEndCapture / cuGraphInstantiate and are
        // destroyed once, here; the workspace that owns the graph synchronises its buffers' stream
        // before they are freed, so no replay is in flight.
        unsafe {
            cust::sys::cuGraphExecDestroy(self.exec);
            cust::sys::cuGraphDestroy(self.graph);
        }
    }
}

pub(super) fn check(what: &str, r: cust::sys::CUresult) -> Result<()> {
    if r == cust::sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Backend {
            backend: "cuda",
            message: format!("{what}: {r:?}"),
        })
    }
}

impl CudaModel {
    /// [`CudaModel::enqueue`] through a CUDA graph: the first call for a (B, N) runs the forward
    /// once eagerly (cuBLAS settles its workspace), then captures it; later calls copy the ids
    /// into the workspace and replay the graph (one launch instead of ~15 per block).
    pub fn enqueue_graph(&self, ids: ArrayView2<'_, usize>) -> Result<()> {
        let mut guard = self.workspace_for(&ids)?;
        let ws = guard.as_mut().expect("workspace_for made it");
        let stream = self.gpu.stream.as_inner();
        if ws.graph.is_none() {
            self.run(ws, None, None)?;
            self.gpu.sync("the forward before its capture")?;
            // SAFETY: the stream is live; relaxed mode, since other threads may use the driver.
            check("beginning the capture", unsafe {
                cust::sys::cuStreamBeginCapture_v2(
                    stream,
                    cust::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
                )
            })?;
            let queued = self.run(ws, None, None);
            let mut graph: cust::sys::CUgraph = std::ptr::null_mut();
            // SAFETY: ends the capture begun above on the same stream, whatever `run` returned.
            let ended = check("ending the capture", unsafe {
                cust::sys::cuStreamEndCapture(stream, &mut graph)
            });
            queued?;
            ended?;
            let mut exec: cust::sys::CUgraphExec = std::ptr::null_mut();
            // SAFETY: `graph` is the captured graph; `exec` receives its executable instance.
            let inst = check("instantiating the graph", unsafe {
                cust::sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0)
            });
            if let Err(e) = inst {
                // SAFETY: `graph` was created above and is not used after this.
                unsafe { cust::sys::cuGraphDestroy(graph) };
                return Err(e);
            }
            ws.graph = Some(Graph { graph, exec });
        }
        let exec = ws.graph.as_ref().expect("captured").exec;
        // SAFETY: `exec` is live while the workspace (and its buffers, which the graph reads and
        // writes) lives; the launch is queued on the stream every buffer synchronises before drop.
        check("launching the graph", unsafe {
            cust::sys::cuGraphLaunch(exec, stream)
        })
    }

    /// [`CudaModel::enqueue_graph`], then the logits (B, N, V).
    pub fn forward_graph(&self, ids: ArrayView2<'_, usize>) -> Result<Array3<f32>> {
        self.enqueue_graph(ids)?;
        let guard = self.ws.lock().map_err(|_| Error::Backend {
            backend: "cuda",
            message: "model workspace poisoned".into(),
        })?;
        self.logits_of(guard.as_ref().expect("enqueue_graph made it"))
    }
}
