//! Where each parameter lives in the one flat f32 buffer.
//!
//! Order: trunk layers (weight [out, in], then bias [out]) from input to
//! output, then the weights of all heads as one block, then all head biases.
//! Stacking the head weights lets the heads run as one GEMM: the block is a
//! [Σ out_t, trunk_out] row-major matrix. Names follow PyTorch's
//! `nn.Sequential` / `nn.ModuleDict` naming (`trunk.0.weight`,
//! `heads.<task>.weight`), so a saved file loads into the equivalent module.

use crate::spec::ModelSpec;

#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of one Linear layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearAt {
    pub inp: usize,
    pub out: usize,
    pub w: usize,
    pub b: usize,
}

#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub entries: Vec<ParamEntry>,
    pub trunk: Vec<LinearAt>,
    /// All heads as one Linear: [out_cols, trunk_out] weights, [out_cols] biases.
    pub heads: LinearAt,
    pub total: usize,
}

impl ParamLayout {
    /// The buffer as one range per Linear (each trunk layer's weights and
    /// biases, then all heads), ascending: the units backward finishes.
    pub fn layer_ranges(&self) -> Vec<std::ops::Range<usize>> {
        self.trunk
            .iter()
            .map(|l| l.w..l.b + l.out)
            .chain(std::iter::once(self.heads.w..self.total))
            .collect()
    }

    pub fn new(spec: &ModelSpec) -> Self {
        let mut entries = vec![];
        let mut off = 0;
        let mut push = |entries: &mut Vec<ParamEntry>, name: String, shape: Vec<usize>| {
            let at = off;
            off += shape.iter().product::<usize>();
            entries.push(ParamEntry {
                name,
                shape,
                offset: at,
            });
            at
        };
        let mut trunk = vec![];
        for (l, (i, o)) in spec.trunk_dims().into_iter().enumerate() {
            // nn.Sequential index: Linear at 2l, activation at 2l+1.
            let w = push(&mut entries, format!("trunk.{}.weight", 2 * l), vec![o, i]);
            let b = push(&mut entries, format!("trunk.{}.bias", 2 * l), vec![o]);
            trunk.push(LinearAt {
                inp: i,
                out: o,
                w,
                b,
            });
        }
        let h = spec.trunk_out();
        let cols = spec.columns();
        let mut head_w = None;
        for t in &spec.tasks {
            let at = push(
                &mut entries,
                format!("heads.{}.weight", t.name),
                vec![t.kind.out_dim(), h],
            );
            head_w.get_or_insert(at);
        }
        let mut head_b = None;
        for t in &spec.tasks {
            let at = push(
                &mut entries,
                format!("heads.{}.bias", t.name),
                vec![t.kind.out_dim()],
            );
            head_b.get_or_insert(at);
        }
        let heads = LinearAt {
            inp: h,
            out: cols.out_cols,
            w: head_w.unwrap_or(off),
            b: head_b.unwrap_or(off),
        };
        ParamLayout {
            entries,
            trunk,
            heads,
            total: off,
        }
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Every Linear of the model in forward order (trunk layers, then heads).
    pub fn linears(&self) -> impl Iterator<Item = &LinearAt> {
        self.trunk.iter().chain(std::iter::once(&self.heads))
    }
}

/// Deterministic PyTorch-style init: weight and bias ~ U(-1/√in, 1/√in)
/// (nn.Linear's default), from a counter-based generator so every rank,
/// any world size, gets the same values.
pub fn init_params(layout: &ParamLayout, seed: u64) -> Vec<f32> {
    let mut p = vec![0f32; layout.total];
    for lin in layout.linears() {
        let bound = 1.0 / (lin.inp.max(1) as f64).sqrt();
        for r in [lin.w..lin.w + lin.inp * lin.out, lin.b..lin.b + lin.out] {
            for i in r {
                let u = crate::rng::uniform(seed, 0x1417, i as u64);
                p[i] = ((2.0 * u - 1.0) * bound) as f32;
            }
        }
    }
    p
}

/// A hash of the buffer: the start-up check that every rank holds the
/// same parameters.
pub fn checksum(params: &[f32]) -> u64 {
    crate::digest::hash64_f32(params)
}
