//! The extra state of a `--sync local` run in a checkpoint:
//! `local.safetensors` beside model.safetensors (which holds the shared θ
//! of the last outer update) and optim.safetensors (rank 0's inner state).
//!
//! ```text
//! outer.momentum          v, the outer momentum (same on every rank)
//! rank.<r>.params         θ_r, rank r's parameters since the last outer step
//! rank.<r>.opt_state      rank r's inner optimizer state
//! ```
//!
//! Every rank's inner state is gathered to rank 0, which writes this one
//! file with the others (the checkpoint stays one directory, verified as
//! one). Such a checkpoint resumes only at the same number of ranks: each
//! rank continues from its own θ_r and inner state, so the resumed run is
//! bit-identical to one that never stopped.

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::comm::Communicator;
use crate::error::{Error, Result};

pub const LOCAL_FILE: &str = "local.safetensors";

/// What a local-mode run keeps besides θ (the checkpoint's parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalState {
    /// v: the outer momentum.
    pub momentum: Vec<f32>,
    /// Each rank's parameters and inner optimizer state, by rank.
    pub ranks: Vec<RankState>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RankState {
    pub params: Vec<f32>,
    pub opt_state: Vec<f32>,
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The safetensors bytes of `s` (1-D f32 tensors).
pub fn to_bytes(s: &LocalState) -> Result<Vec<u8>> {
    let mut named = vec![("outer.momentum".to_string(), le_bytes(&s.momentum))];
    for (r, st) in s.ranks.iter().enumerate() {
        named.push((format!("rank.{r}.params"), le_bytes(&st.params)));
        named.push((format!("rank.{r}.opt_state"), le_bytes(&st.opt_state)));
    }
    let mut views = vec![];
    for (name, bytes) in &named {
        let v = TensorView::new(Dtype::F32, vec![bytes.len() / 4], bytes)
            .map_err(|e| Error::Comm(format!("safetensors: {e}")))?;
        views.push((name.clone(), v));
    }
    safetensors::serialize(views, None).map_err(|e| Error::Comm(format!("safetensors: {e}")))
}

/// Reads [`to_bytes`]'s output; `params` and `opt_len` are the lengths
/// every tensor must have. Errors are plain messages (the caller names the
/// file).
pub fn from_bytes(
    bytes: &[u8],
    params: usize,
    opt_len: usize,
) -> std::result::Result<LocalState, String> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("{LOCAL_FILE} is not a valid safetensors file ({e})"))?;
    let get = |name: &str, len: usize| -> std::result::Result<Vec<f32>, String> {
        let t = st
            .tensor(name)
            .map_err(|_| format!("{LOCAL_FILE}: tensor {name} is missing"))?;
        if t.dtype() != Dtype::F32 || t.shape() != [len] {
            return Err(format!(
                "{LOCAL_FILE}: tensor {name} is {:?} {:?}, expected F32 [{len}]",
                t.dtype(),
                t.shape()
            ));
        }
        Ok(from_le(t.data()))
    };
    let momentum = get("outer.momentum", params)?;
    let n = st.names().iter().filter(|n| n.ends_with(".params")).count();
    let mut ranks = vec![];
    for r in 0..n {
        ranks.push(RankState {
            params: get(&format!("rank.{r}.params"), params)?,
            opt_state: get(&format!("rank.{r}.opt_state"), opt_len)?,
        });
    }
    Ok(LocalState { momentum, ranks })
}

/// Every rank's (params, opt_state) to every rank, with `momentum` (the
/// same everywhere): the local state a checkpoint holds. Collective.
pub fn gather(
    comm: &dyn Communicator,
    momentum: &[f32],
    params: &[f32],
    opt_state: &[f32],
) -> Result<LocalState> {
    let mut mine = le_bytes(params);
    mine.extend(le_bytes(opt_state));
    let all = comm.all_gather_bytes(&mine)?;
    let ranks = all
        .chunks_exact(mine.len().max(1))
        .take(comm.size())
        .map(|c| {
            let (p, o) = c.split_at(4 * params.len());
            RankState {
                params: from_le(p),
                opt_state: from_le(o),
            }
        })
        .collect();
    Ok(LocalState {
        momentum: momentum.to_vec(),
        ranks,
    })
}

/// Rank 0's `local` (read from a checkpoint) to every rank. The others
/// pass `None`; `params` and `opt_len` are the tensor lengths. A local
/// state of another number of ranks is refused (on every rank alike).
pub fn broadcast(
    comm: &dyn Communicator,
    local: Option<LocalState>,
    params: usize,
    opt_len: usize,
) -> Result<Option<LocalState>> {
    let mut head = [0u8; 16];
    if let Some(l) = &local {
        head[..8].copy_from_slice(&1u64.to_le_bytes());
        head[8..].copy_from_slice(&(l.ranks.len() as u64).to_le_bytes());
    }
    comm.broadcast(0, &mut head)?;
    if head[0] == 0 {
        return Ok(None);
    }
    let ranks = u64::from_le_bytes(head[8..].try_into().expect("8 bytes")) as usize;
    if ranks != comm.size() && comm.rank() != 0 {
        return Err(Error::OtherRank(0));
    }
    if ranks != comm.size() {
        return Err(Error::config(format!(
            "the checkpoint is of a --sync local run on {ranks} rank(s), which holds each \
             rank's own parameters and optimizer state; resume it on {ranks} rank(s) \
             (this run has {})",
            comm.size()
        )));
    }
    let per = params + opt_len;
    let mut bytes = match &local {
        Some(l) => {
            let mut b = le_bytes(&l.momentum);
            for r in &l.ranks {
                b.extend(le_bytes(&r.params));
                b.extend(le_bytes(&r.opt_state));
            }
            b
        }
        None => vec![0u8; 4 * (params + ranks * per)],
    };
    comm.broadcast(0, &mut bytes)?;
    let v = from_le(&bytes);
    let (momentum, rest) = v.split_at(params);
    Ok(Some(LocalState {
        momentum: momentum.to_vec(),
        ranks: rest
            .chunks_exact(per.max(1))
            .take(ranks)
            .map(|c| RankState {
                params: c[..params].to_vec(),
                opt_state: c[params..].to_vec(),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = LocalState {
            momentum: vec![1.0, -2.0, 3.5],
            ranks: (0..3)
                .map(|r| RankState {
                    params: vec![r as f32, 0.5, f32::MIN_POSITIVE],
                    opt_state: vec![r as f32 * 7.0; 6],
                })
                .collect(),
        };
        let b = to_bytes(&s).unwrap();
        assert_eq!(from_bytes(&b, 3, 6).unwrap(), s);
        assert!(
            from_bytes(&b, 4, 6)
                .unwrap_err()
                .contains("expected F32 [4]")
        );
    }
}
