//! Parameters in and out as safetensors, readable by PyTorch.
//!
//! Tensors are named and shaped like the equivalent PyTorch module
//! (`trunk.0.weight` [out, in], `heads.<task>.bias` [out], ...); the model
//! spec travels as JSON in the metadata (`ringtrain.spec`), so a file alone
//! is enough to rebuild the model elsewhere.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::layout::ParamLayout;
use crate::spec::ModelSpec;

pub mod local;
pub mod training;

pub const SPEC_KEY: &str = "ringtrain.spec";
/// The trunk's activation, exactly (`relu`, `gelu_tanh`, `tanh`).
pub const ACTIVATION_KEY: &str = "ringtrain.activation";
/// The PyTorch module computing it (`nn.GELU(approximate='tanh')`).
pub const TORCH_ACTIVATION_KEY: &str = "ringtrain.torch_activation";

/// The safetensors bytes of the parameters, with the spec in the metadata.
pub fn params_to_bytes(
    spec: &ModelSpec,
    layout: &ParamLayout,
    params: &[f32],
    extra: &[(&str, String)],
) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views = vec![];
    for e in &layout.entries {
        let data = &bytes[4 * e.offset..4 * (e.offset + e.len())];
        let v = TensorView::new(Dtype::F32, e.shape.clone(), data)
            .map_err(|err| Error::Comm(format!("safetensors: {err}")))?;
        views.push((e.name.clone(), v));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(
        SPEC_KEY.to_string(),
        serde_json::to_string(spec).expect("spec serialises"),
    );
    // The exact activation, by its name and as the PyTorch module that
    // computes it, for whoever rebuilds the model from the file alone.
    meta.insert(
        ACTIVATION_KEY.to_string(),
        spec.activation.exact_name().to_string(),
    );
    meta.insert(
        TORCH_ACTIVATION_KEY.to_string(),
        spec.activation.torch_module().to_string(),
    );
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    safetensors::serialize(views, Some(meta))
        .map_err(|err| Error::Comm(format!("safetensors: {err}")))
}

pub fn save_params(
    path: &Path,
    spec: &ModelSpec,
    layout: &ParamLayout,
    params: &[f32],
) -> Result<()> {
    save_params_with(path, spec, layout, params, &[])
}

/// [`save_params`] with more metadata entries (key, value).
pub fn save_params_with(
    path: &Path,
    spec: &ModelSpec,
    layout: &ParamLayout,
    params: &[f32],
    extra: &[(&str, String)],
) -> Result<()> {
    write_atomic(path, &params_to_bytes(spec, layout, params, extra)?)
}

/// Reads parameters for `spec` from a safetensors file. Every tensor of the
/// layout must be present as f32 with the right shape; if the file carries
/// a ringtrain spec it must describe the same architecture.
pub fn load_params(path: &Path, spec: &ModelSpec, layout: &ParamLayout) -> Result<Vec<f32>> {
    let bad = |msg: String| Error::Params {
        path: path.to_path_buf(),
        msg,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(bad(
            "not a regular file (expected a .safetensors file)".into()
        ));
    }
    // Judge the file by its header before touching the body: 8 bytes of
    // header length, then that much JSON, within the file and within
    // safetensors' own limit; a model of this layout needs 4 bytes per
    // parameter after it.
    let mut head = [0u8; 8];
    std::io::Read::read_exact(&mut &file, &mut head).map_err(|_| {
        bad("not a valid safetensors file (shorter than its 8-byte header length)".into())
    })?;
    let header_len = u64::from_le_bytes(head);
    let size = meta.len();
    if header_len > MAX_HEADER_BYTES || 8 + header_len > size {
        return Err(bad(format!(
            "not a valid safetensors file (its header claims {header_len} bytes; the file has {size})"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    std::io::Read::read_exact(&mut &file, &mut header).map_err(|e| Error::io(path, e))?;
    let data_len = serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|h| tensor_data_end(&h))
        .ok_or_else(|| {
            bad("not a valid safetensors file (its header is not a safetensors header)".into())
        })?;
    if data_len != size - 8 - header_len {
        return Err(bad(format!(
            "not a valid safetensors file (its header describes {data_len} bytes of tensors;              the file holds {})",
            size - 8 - header_len
        )));
    }
    // SAFETY: the map is read only while `file` is open; a file changed
    // underneath would give wrong values, which the checks below (shapes,
    // the spec in the metadata) and the start-up checksum across ranks
    // would report, not undefined behaviour of ours.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    params_from_bytes(&map, path, spec, layout)
}

/// The end of the last tensor's bytes that a safetensors header (a JSON
/// object of `name: {dtype, shape, data_offsets: [begin, end]}` and an
/// optional `__metadata__`) describes; None if it is not one.
fn tensor_data_end(h: &serde_json::Value) -> Option<u64> {
    let mut end = 0;
    for (name, t) in h.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let offsets = t.get("data_offsets")?.as_array()?;
        end = end.max(offsets.get(1)?.as_u64()?);
    }
    Some(end)
}

/// safetensors refuses headers over 100 MB; so do we, before reading one.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// [`load_params`] of a file already in memory (`path` names it in errors).
pub fn params_from_bytes(
    bytes: &[u8],
    path: &Path,
    spec: &ModelSpec,
    layout: &ParamLayout,
) -> Result<Vec<f32>> {
    let bad = |msg: String| Error::Params {
        path: path.to_path_buf(),
        msg,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    if let Some(json) = meta.metadata().as_ref().and_then(|m| m.get(SPEC_KEY)) {
        let theirs: ModelSpec = serde_json::from_str(json)
            .map_err(|e| bad(format!("unreadable {SPEC_KEY} metadata ({e})")))?;
        check_same_architecture(&theirs, spec).map_err(bad)?;
    }
    let mut params = vec![0f32; layout.total];
    for e in &layout.entries {
        let t = st
            .tensor(&e.name)
            .map_err(|_| bad(format!("tensor {} is missing", e.name)))?;
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {} has dtype {:?}, expected F32",
                e.name,
                t.dtype()
            )));
        }
        if t.shape() != e.shape.as_slice() {
            return Err(bad(format!(
                "tensor {} has shape {:?}, the model needs {:?}",
                e.name,
                t.shape(),
                e.shape
            )));
        }
        for (p, c) in params[e.range()].iter_mut().zip(t.data().chunks_exact(4)) {
            *p = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(params)
}

fn check_same_architecture(file: &ModelSpec, ours: &ModelSpec) -> std::result::Result<(), String> {
    let kinds = |s: &ModelSpec| -> Vec<(String, crate::tasks::TaskKind)> {
        s.tasks.iter().map(|t| (t.name.clone(), t.kind)).collect()
    };
    if file.input_dim != ours.input_dim
        || file.hidden != ours.hidden
        || file.activation != ours.activation
        || kinds(file) != kinds(ours)
    {
        return Err(format!(
            "saved model is input {} hidden {:?} {} tasks {:?}; this run is input {} hidden {:?} {} tasks {:?}",
            file.input_dim,
            file.hidden,
            file.activation.name(),
            kinds(file),
            ours.input_dim,
            ours.hidden,
            ours.activation.name(),
            kinds(ours)
        ));
    }
    Ok(())
}
