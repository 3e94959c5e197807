//! Names, shapes and parameter counts against the original: fixtures/model/original-state-dict.json
//! (a dump of the original's `state_dict()` for small and medium, copied from shared/design) and
//! the closed forms of design model.md §5, as integers.

use std::path::PathBuf;

use muse_model::spec::{parameter_counts, state_dict};
use muse_model::{init, Config, Weights};
use serde_json::Value;

fn original() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/model/original-state-dict.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

#[test]
fn state_dict_matches_the_originals_names_shapes_dtypes_and_order() {
    let all = original();
    for name in ["small", "medium"] {
        let o = &all[name];
        let cfg = Config::from_json(&o["config"].to_string()).expect("config");
        assert_eq!(cfg, Config::named(name).expect("named"), "{name}");
        let want: Vec<(String, Vec<usize>, String)> = o["state_dict"]
            .as_array()
            .expect("list")
            .iter()
            .map(|e| {
                let shape = e[1]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_u64().expect("dim") as usize)
                    .collect();
                (
                    e[0].as_str().expect("name").to_string(),
                    shape,
                    e[2].as_str().expect("dtype").to_string(),
                )
            })
            .collect();
        let got: Vec<(String, Vec<usize>, String)> = state_dict(&cfg)
            .into_iter()
            .map(|s| (s.name, s.shape, s.dtype.torch_name().to_string()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: entry count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{name}");
        }
        // Parameters: the original's parameters() list (tied tensors once, buffers excluded).
        let params: Vec<&str> = o["parameters"]
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .collect();
        let ours: Vec<String> = state_dict(&cfg)
            .into_iter()
            .filter(|s| s.param)
            .map(|s| s.name)
            .collect();
        assert_eq!(ours, params, "{name}: parameters");
        assert_eq!(
            parameter_counts(&cfg).1 as u64,
            o["params_total"].as_u64().expect("total"),
            "{name}"
        );
    }
}

fn with_seq(name: &str, n_seq: usize) -> Config {
    Config {
        n_seq,
        ..Config::named(name).expect("named")
    }
}

#[test]
fn parameter_counts_equal_design_section_5() {
    // (config, total with the side branch, core = total − extension).
    let cases = [
        (with_seq("small", 256), 10_619_295, 9_690_808),
        (with_seq("small", 512), 10_750_367, 9_821_880),
        (with_seq("small", 1024), 11_012_511, 10_084_024),
        (with_seq("small", 128), 10_553_759, 9_625_272),
        (with_seq("medium", 512), 77_902_839, 74_210_960),
        (with_seq("medium", 1024), 78_427_127, 74_735_248),
        (with_seq("medium", 128), 77_509_623, 73_817_744),
        (with_seq("large", 128), 449_880_527, 435_156_840),
        (
            with_seq("large", 512),
            450_666_959,
            435_156_840 + 384 * 2048,
        ),
    ];
    for (cfg, total, core) in cases {
        let (rows, t) = parameter_counts(&cfg);
        assert_eq!(t, total, "{cfg:?}");
        let side: usize = rows
            .iter()
            .filter(|r| matches!(r.0, "bk_hyperbolic" | "ar_ssm_fusion"))
            .map(|r| r.1)
            .sum();
        assert_eq!(t - side, core, "{cfg:?}");
        let htt = rows.iter().find(|r| r.0 == "htt").expect("htt").1;
        let want_htt = match cfg.d_model {
            512 => 165_248,
            1024 => 459_808,
            _ => 1_307_584,
        };
        assert_eq!(htt, want_htt);
    }
    // Block = 4D² + D·G + G + G·R + R + 3DR + 13D + 7 (small: 1,174,183; medium 4,576,551).
    for (name, block) in [
        ("small", 1_174_183),
        ("medium", 4_576_551),
        ("large", 18_065_959),
    ] {
        let one = Config {
            n_layers: 1,
            ..Config::named(name).expect("named")
        };
        let two = Config {
            n_layers: 2,
            ..one.clone()
        };
        assert_eq!(
            parameter_counts(&two).1 - parameter_counts(&one).1,
            block,
            "{name}"
        );
    }
}

#[test]
fn side_branch_flags_drop_exactly_their_tensors() {
    let full = Config::named("small").expect("small");
    let core = Config {
        use_bk_hyperbolic: false,
        use_ar_ssm_fusion: false,
        ..full.clone()
    };
    assert_eq!(parameter_counts(&core).1, 9_690_808);
    assert!(state_dict(&core)
        .iter()
        .all(|s| !s.name.starts_with("bk_hyperbolic") && !s.name.starts_with("ar_ssm_fusion")));
}

#[test]
fn config_json_is_checked() {
    let err = |s: &str| format!("{:#}", Config::from_json(s).expect_err("rejected"));
    assert!(
        err(r#"{"vocab_size": 10, "d_model": 16, "n_layers": 1, "n_seq": 8, "bogus": 1}"#)
            .contains("unknown field `bogus`")
    );
    assert!(
        err(r#"{"vocab_size": 10, "d_model": 16, "n_layers": 1}"#).contains("missing key `n_seq`")
    );
    assert!(
        err(r#"{"vocab_size": 10, "d_model": 18, "n_layers": 1, "n_seq": 8, "num_heads": 4}"#)
            .contains("multiple of `num_heads`")
    );
    assert!(err(
        r#"{"vocab_size": 10, "d_model": 16, "n_layers": 1, "n_seq": 8, "use_bitnet": true}"#
    )
    .contains("`use_bitnet`"));
    let ok = Config::from_json(
        r#"{"vocab_size": 10, "d_model": 16, "n_layers": 1, "n_seq": 8, "num_heads": 2,
        "use_triton_kernel": true, "triton_kernel_version": "fast"}"#,
    )
    .expect("accepted");
    assert_eq!(
        (ok.htt_rank, ok.hyperbolic_window_size, ok.ar_ssm_max_rank),
        (16, 64, 32)
    );
}

#[test]
fn loading_refuses_what_does_not_fit_naming_the_tensor() {
    let cfg = Config::named("tiny").expect("tiny");
    let dir = std::env::temp_dir().join(format!("muse-model-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let w = init::init(&cfg, 3);
    let path = dir.join("w.safetensors");
    w.save(&path, &[]).expect("save");
    let back = Weights::load(&cfg, &path).expect("round trip");
    assert_eq!(back.tensors, w.tensors);
    let refuse = |w: &Weights, c: &Config| {
        let p = dir.join("bad.safetensors");
        w.save(&p, &[]).expect("save");
        format!("{:#}", Weights::load(c, &p).expect_err("refused"))
    };
    // Another config: the first differing tensor is named.
    let other = Config {
        d_model: 32,
        ..cfg.clone()
    };
    assert!(refuse(&w, &other).contains("tensor `phase7_model.model.token_embedding.core1` has shape [32, 1, 8, 8], expected [32, 1, 8, 6]"));
    // A missing tensor.
    let msg = {
        let p = dir.join("m.safetensors");
        let st = safetensors_without(&w, "phase7_model.model.blocks.1.bk_layer.v_proj.bias");
        std::fs::write(&p, st).expect("write");
        format!("{:#}", Weights::load(&cfg, &p).expect_err("refused"))
    };
    assert!(
        msg.contains("tensor `phase7_model.model.blocks.1.bk_layer.v_proj.bias` is missing"),
        "{msg}"
    );
    // An unexpected tensor: the side branch of a file loaded into a core-only config.
    let core = Config {
        use_ar_ssm_fusion: false,
        ..cfg.clone()
    };
    assert!(refuse(&w, &core).contains("unexpected tensor `ar_ssm_fusion."));
    // A tied alias that differs.
    let p = dir.join("tied.safetensors");
    std::fs::write(
        &p,
        safetensors_changed(&w, "phase7_model.model.lm_head.embedding.phase_shift"),
    )
    .expect("write");
    let msg = format!("{:#}", Weights::load(&cfg, &p).expect_err("refused"));
    assert!(msg.contains("`phase7_model.model.lm_head.embedding.phase_shift` is tied to `phase7_model.model.token_embedding.phase_shift`"), "{msg}");
    // A wrong dtype.
    let p = dir.join("dtype.safetensors");
    std::fs::write(
        &p,
        safetensors_f64(&w, "phase7_model.model.layer_norm_final.bias"),
    )
    .expect("write");
    let msg = format!("{:#}", Weights::load(&cfg, &p).expect_err("refused"));
    assert!(
        msg.contains(
            "tensor `phase7_model.model.layer_norm_final.bias` has dtype F64, expected F32"
        ),
        "{msg}"
    );
    // Only one name of each tied group, as `safetensors.torch.save_model` keeps it (the first in
    // sorted order: `phase7_model.htt_embedding.*`).
    let p = dir.join("dedup.safetensors");
    std::fs::write(
        &p,
        bytes_with(&w, |n, _, _| {
            !n.contains("token_embedding.") && !n.contains("lm_head.embedding.")
        }),
    )
    .expect("write");
    assert_eq!(
        Weights::load(&cfg, &p)
            .expect("deduplicated file loads")
            .tensors,
        w.tensors
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The safetensors bytes of `w` with every state_dict entry, `edit` applied to each.
fn bytes_with(
    w: &Weights,
    edit: impl Fn(&str, &mut safetensors::Dtype, &mut Vec<u8>) -> bool,
) -> Vec<u8> {
    let mut bufs = Vec::new();
    for spec in state_dict(&w.config) {
        let key = spec.alias_of.clone().unwrap_or(spec.name.clone());
        let (shape, data) = &w.tensors[&key];
        let mut dt = if spec.name == "bk_hyperbolic.z" {
            safetensors::Dtype::C64
        } else {
            safetensors::Dtype::F32
        };
        let mut bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        if edit(&spec.name, &mut dt, &mut bytes) {
            bufs.push((spec.name, dt, shape.clone(), bytes));
        }
    }
    let views: Vec<_> = bufs
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

fn safetensors_without(w: &Weights, drop: &str) -> Vec<u8> {
    bytes_with(w, |n, _, _| n != drop)
}

fn safetensors_changed(w: &Weights, name: &str) -> Vec<u8> {
    bytes_with(w, |n, _, b| {
        if n == name {
            b[0] ^= 1;
        }
        true
    })
}

fn safetensors_f64(w: &Weights, name: &str) -> Vec<u8> {
    bytes_with(w, |n, dt, b| {
        if n == name {
            *dt = safetensors::Dtype::F64;
            *b = b
                .chunks_exact(4)
                .flat_map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
        }
        true
    })
}
