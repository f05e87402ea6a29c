//! What the benches share: a deterministic generator and tokens with every space defined.
#![allow(dead_code)]

pub mod alloc;
#[path = "../../tests/common/binary.rs"]
pub mod binary;
#[path = "../../tests/common/certs.rs"]
pub mod certs;
pub mod probe;
#[path = "../../tests/common/raw_h2.rs"]
pub mod raw_h2;
pub mod wire;

use neurograph::model::{Space, Token, TokenDraft, TokenId, TokenInput};

/// Tokens per `BatchCreate` while preloading.
pub const CHUNK: usize = 1_000;
/// Fixed commit time, so that runs are deterministic.
pub const AT: u32 = 1_700_000_000;

/// xorshift64: deterministic and dependency-free; quality is ample for picking ids and points.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next raw value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..len.
    pub fn below(&mut self, len: usize) -> usize {
        (self.next_u64() % len as u64) as usize
    }

    /// A point inside `space`'s range (kept 1 % inside so that rounding never leaves it).
    pub fn point(&mut self, space: Space) -> [f32; 3] {
        let max = space.max_value() * 0.99;
        [(); 3].map(|()| ((self.unit() * 2.0 - 1.0) * max) as f32)
    }
}

/// Hits a range query aims at.
pub const RANGE_HITS: f64 = 50.0;

/// The radius whose ball holds `RANGE_HITS` of `n` tokens spread uniformly over `space`'s cube
/// (the generator keeps points within 99 % of the representable range).
pub fn radius_for_hits(space: Space, n: usize) -> f64 {
    let side = 2.0 * 0.99 * space.max_value();
    (RANGE_HITS * side.powi(3) / (n as f64 * 4.0 / 3.0 * std::f64::consts::PI)).cbrt()
}

/// A random space and a centre whose ball of `radius_for_hits` (for `n` tokens) lies inside
/// the cube: a range query that should find `RANGE_HITS` on average.
pub fn range_query(rng: &mut XorShift, n: usize) -> (Space, [f64; 3], f64) {
    let space = Space::ALL[rng.below(Space::ALL.len())];
    let radius = radius_for_hits(space, n);
    let inner = 0.99 * space.max_value() - radius;
    let centre = [(); 3].map(|()| (rng.unit() * 2.0 - 1.0) * inner);
    (space, centre, radius)
}

/// A token with every space defined, in (domain, entity_type) pair `pair`.
fn input(rng: &mut XorShift, pair: usize) -> TokenInput {
    TokenInput {
        domain: (pair >> 4) as u32,
        entity_type: (pair & 0xF) as u32,
        weight: rng.unit() as f32,
        field_radius: 1.0,
        field_strength: 0.5,
        points: Space::ALL.map(|space| Some(rng.point(space))),
        ..TokenInput::default()
    }
}

/// `input` validated for a create.
pub fn draft(rng: &mut XorShift, pair: usize) -> TokenDraft {
    input(rng, pair)
        .to_draft()
        .expect("generated input is valid")
}

/// The id a store preloaded by `BatchCreate`s of `CHUNK` gives token number `index`: chunk `c`
/// goes to pair `c % 256` and takes that pair's next `CHUNK` local ids. Computed rather than
/// looked up in a table of ids, so that picking a random id costs no cache miss of its own.
pub fn preloaded_id(index: usize) -> TokenId {
    let chunk = index / CHUNK;
    let pair = chunk % 256;
    let local = (chunk / 256) * CHUNK + index % CHUNK + 1;
    TokenId::from_parts((pair >> 4) as u32, (pair & 0xF) as u32, local as u32)
        .expect("bench sizes stay far below the local id limit")
}

/// `n` tokens with every space defined, at the ids `preloaded_id` gives, stamped `AT`: what a
/// store preloaded by batches would hold.
pub fn tokens(rng: &mut XorShift, n: usize) -> Vec<Token> {
    (0..n)
        .map(|index| Token {
            id: preloaded_id(index),
            data: draft(rng, (index / CHUNK) % 256).stamped(AT),
        })
        .collect()
}
