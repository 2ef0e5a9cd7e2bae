//! The extra state of a `--sync local` run in a checkpoint:
//! `local.safetensors` beside model.safetensors (which holds the shared θ
//! of the last outer update) and optim.safetensors (rank 0's inner state).
//!
//! ```text
//! outer.momentum          v, the outer momentum (same on every rank)
//! rank.<r>.params         θ_r, rank r's parameters since the last outer step
//! rank.<r>.opt_state      rank r's inner optimizer state
//! rank.<r>.counters       rank r's [updates, skips in a row] (U64): a rank
//!                         that skipped a non-finite local step has
//!                         applied fewer updates than the others
//! ```
//!
//! A checkpoint without `rank.<r>.counters` (written before they were
//! kept) gives every rank state.json's counters.
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
    /// Inner optimizer updates applied, and updates skipped in a row.
    pub counters: [u64; 2],
}

fn counter_bytes(c: [u64; 2]) -> Vec<u8> {
    c.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn counters_from(b: &[u8]) -> [u64; 2] {
    let at = |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    [at(0), at(1)]
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
    let mut named = vec![(
        "outer.momentum".to_string(),
        Dtype::F32,
        le_bytes(&s.momentum),
    )];
    for (r, st) in s.ranks.iter().enumerate() {
        named.push((format!("rank.{r}.params"), Dtype::F32, le_bytes(&st.params)));
        let opt = le_bytes(&st.opt_state);
        named.push((format!("rank.{r}.opt_state"), Dtype::F32, opt));
        let c = counter_bytes(st.counters);
        named.push((format!("rank.{r}.counters"), Dtype::U64, c));
    }
    let mut views = vec![];
    for (name, dtype, bytes) in &named {
        let elem = if *dtype == Dtype::U64 { 8 } else { 4 };
        let v = TensorView::new(*dtype, vec![bytes.len() / elem], bytes)
            .map_err(|e| Error::Comm(format!("safetensors: {e}")))?;
        views.push((name.clone(), v));
    }
    safetensors::serialize(views, None).map_err(|e| Error::Comm(format!("safetensors: {e}")))
}

/// Reads [`to_bytes`]'s output; `params` and `opt_len` are the lengths
/// every tensor must have; `counters` stand in for a rank's missing
/// `rank.<r>.counters`. Errors are plain messages (the caller names the
/// file).
pub fn from_bytes(
    bytes: &[u8],
    params: usize,
    opt_len: usize,
    counters: [u64; 2],
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
        let counters = match st.tensor(&format!("rank.{r}.counters")) {
            Err(_) => counters,
            Ok(t) if t.dtype() == Dtype::U64 && t.shape() == [2] => counters_from(t.data()),
            Ok(t) => {
                return Err(format!(
                    "{LOCAL_FILE}: tensor rank.{r}.counters is {:?} {:?}, expected U64 [2]",
                    t.dtype(),
                    t.shape()
                ));
            }
        };
        ranks.push(RankState {
            params: get(&format!("rank.{r}.params"), params)?,
            opt_state: get(&format!("rank.{r}.opt_state"), opt_len)?,
            counters,
        });
    }
    Ok(LocalState { momentum, ranks })
}

/// Every rank's (params, opt_state) to every rank, with `momentum` (the
/// same everywhere): the local state a checkpoint holds. Collective.
pub fn gather(comm: &dyn Communicator, momentum: &[f32], mine: &RankState) -> Result<LocalState> {
    let mine = rank_bytes(mine);
    let all = comm.all_gather_bytes(&mine)?;
    let (params, opt_len) = (momentum.len(), (mine.len() - 16) / 4 - momentum.len());
    let ranks = all
        .chunks_exact(mine.len())
        .take(comm.size())
        .map(|c| rank_from(c, params, opt_len))
        .collect();
    Ok(LocalState {
        momentum: momentum.to_vec(),
        ranks,
    })
}

/// One rank's state as bytes: params, opt_state (f32), counters (u64).
fn rank_bytes(r: &RankState) -> Vec<u8> {
    let mut b = le_bytes(&r.params);
    b.extend(le_bytes(&r.opt_state));
    b.extend(counter_bytes(r.counters));
    b
}

fn rank_from(c: &[u8], params: usize, opt_len: usize) -> RankState {
    let (p, rest) = c.split_at(4 * params);
    let (o, k) = rest.split_at(4 * opt_len);
    RankState {
        params: from_le(p),
        opt_state: from_le(o),
        counters: counters_from(k),
    }
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
    let per = 4 * (params + opt_len) + 16;
    let mut bytes = match &local {
        Some(l) => {
            let mut b = le_bytes(&l.momentum);
            for r in &l.ranks {
                b.extend(rank_bytes(r));
            }
            b
        }
        None => vec![0u8; 4 * params + ranks * per],
    };
    comm.broadcast(0, &mut bytes)?;
    let (momentum, rest) = bytes.split_at(4 * params);
    Ok(Some(LocalState {
        momentum: from_le(momentum),
        ranks: rest
            .chunks_exact(per)
            .take(ranks)
            .map(|c| rank_from(c, params, opt_len))
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
                    counters: [10 + r as u64, r as u64],
                })
                .collect(),
        };
        let b = to_bytes(&s).unwrap();
        assert_eq!(from_bytes(&b, 3, 6, [0, 0]).unwrap(), s);
        assert!(
            from_bytes(&b, 4, 6, [0, 0])
                .unwrap_err()
                .contains("expected F32 [4]")
        );
    }
}
