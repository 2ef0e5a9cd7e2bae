//! `ringtrain plot INPUT -o OUT.png`: read, pick the kind of plot from the
//! records, draw, and replace OUT atomically. Nothing is written unless
//! the whole image was drawn.

use std::path::Path;

use crate::cli::PlotArgs;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::plot;

pub fn run(a: &PlotArgs) -> Result<()> {
    check_output(&a.input, &a.out)?;
    let records = plot::read_records(&a.input)?;
    let name = a
        .input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (kind, fig) =
        plot::figure(&records, &name, a.title.as_deref()).map_err(|m| Error::data(&a.input, m))?;
    let png = plot::draw::render_png(&fig, a.width, a.height)
        .map_err(|m| Error::data(&a.out, format!("drawing failed: {m}")))?;
    write_atomic(&a.out, &png)?;
    println!(
        "wrote {} ({}x{}, {}: {} panel(s))",
        a.out.display(),
        a.width,
        a.height,
        kind.name(),
        fig.panels.len()
    );
    Ok(())
}

/// The output must be a .png and must not be the input itself.
fn check_output(input: &Path, out: &Path) -> Result<()> {
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::config(format!(
            "-o {}: plots are written as PNG; give a name ending in .png",
            out.display()
        )));
    }
    if let (Ok(i), Ok(o)) = (input.canonicalize(), out.canonicalize()) {
        if i == o {
            return Err(Error::config(format!(
                "-o {}: that is the input file",
                out.display()
            )));
        }
    }
    Ok(())
}
