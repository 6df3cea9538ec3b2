//! Deterministic inputs: the same bytes on every machine and every run.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// A small fast PRNG (xorshift64*), seeded, so generated files are reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Writes `size` pseudo-random bytes to `path`, streaming.
pub(crate) fn random_file(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut file = io::BufWriter::new(fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()
}

/// The copy scenario's context: `files` small files spread over `dirs` directories plus
/// one large file of `big` bytes. Skipped when it already exists with a marker.
pub(crate) fn copy_context(dir: &Path, files: usize, dirs: usize, big: u64) -> io::Result<()> {
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let mut rng = Rng::new(42);
    for i in 0..files {
        let sub = dir.join(format!("d{:03}", i % dirs));
        fs::create_dir_all(&sub)?;
        let len = 200 + (rng.next() % 4000) as usize;
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf);
        fs::write(sub.join(format!("f{i:05}.bin")), &buf)?;
    }
    random_file(&dir.join("big.bin"), big, 7)?;
    fs::write(&marker, b"")?;
    Ok(())
}

/// The parse scenario's Dockerfile: the same generator the parser's own benchmark uses.
pub(crate) use kiln_testkit::inputs::long_dockerfile;
