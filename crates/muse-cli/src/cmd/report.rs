//! `muse report`: renders a report's Markdown from its JSON (e.g. the files a GPU run brought
//! back), next to it as `<stem>.md`.

use std::path::PathBuf;

use anyhow::Context;
use muse_verify::Report;

use crate::Outcome;

/// Arguments of `muse report`.
#[derive(clap::Args)]
pub struct Args {
    /// The report JSON.
    json: PathBuf,
    /// Title of the Markdown document (default: from the file name).
    #[arg(long)]
    title: Option<String>,
    /// Also write the sections that answer the original's benchmark files (quantisation, memory
    /// profile, long context) into `original/` beside the JSON, as `muse bench` does.
    #[arg(long)]
    original_sections: bool,
}

/// Runs `muse report`; exit 1 when the report holds a failing record.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let report = Report::load(&args.json)?;
    let stem = args
        .json
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("`{}` has no file name", args.json.display()))?;
    let title = args.title.unwrap_or_else(|| match stem {
        "kpi-cuda" => "muse KPI report (CUDA)".into(),
        "kpi" => "muse KPI report (CPU)".into(),
        s if s.starts_with("verification") => "muse verification report".into(),
        s => format!("muse report {s}"),
    });
    let md = args.json.with_extension("md");
    muse_verify::report::write_file(&md, &report.to_markdown(&title))?;
    println!("wrote {}", md.display());
    if args.original_sections {
        let dir = args
            .json
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("original");
        for f in muse_bench::original::write_sections(&report, &dir, stem)? {
            println!("wrote {}", f.display());
        }
    }
    Ok(Outcome::of(&report))
}
