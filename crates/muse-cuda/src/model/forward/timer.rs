//! CUDA events between the stages of one forward, for the per-layer time breakdown.

use muse_reference::Result;

use crate::device::Gpu;

/// CUDA events between the stages of one forward, for the per-layer time breakdown.
#[derive(Default)]
pub struct StageTimer {
    marks: Vec<(&'static str, cust::event::Event)>,
}

impl StageTimer {
    pub(super) fn mark(&mut self, gpu: &Gpu, stage: &'static str) -> Result<()> {
        let e = cust::event::Event::new(cust::event::EventFlags::DEFAULT)
            .map_err(|e| crate::device::err("creating an event", e))?;
        e.record(&gpu.stream)
            .map_err(|e| crate::device::err("recording an event", e))?;
        self.marks.push((stage, e));
        Ok(())
    }

    /// Microseconds per stage name, summed over the blocks, in first-seen order.
    pub fn totals(&self) -> Result<Vec<(&'static str, f64)>> {
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for w in self.marks.windows(2) {
            let (_, start) = &w[0];
            let (name, stop) = &w[1];
            stop.synchronize()
                .map_err(|e| crate::device::err("waiting for an event", e))?;
            let us = f64::from(
                stop.elapsed_time_f32(start)
                    .map_err(|e| crate::device::err("reading an event", e))?,
            ) * 1e3;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += us,
                None => out.push((name, us)),
            }
        }
        Ok(out)
    }
}
