//! Layer export and import speed on a ~1 GB tree of mixed files (10,000 small files and
//! a few large ones, not trivially compressible), next to `tar -c | gzip` and
//! `tar -c | pigz` on the same tree; peak memory (VmHWM) before and after, to show it
//! does not grow with the layer.
//!
//! `cargo bench -p kiln-snapshotter --bench layer` (set KILN_BENCH_MB to change the size).
#![allow(clippy::print_stdout)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kiln_snapshotter::layer_in::{WhiteoutStyle, apply_layer};
use kiln_snapshotter::layer_out::{Compression, DiffSource, LayerOptions, write_layer};
use kiln_snapshotter::{SnapshotterKind, Store};

fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Bytes that compress about 2:1, like binaries and text do (pure noise would make
/// every compressor look the same).
fn fill(rng: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let v = *rng;
        for (i, b) in chunk.iter_mut().enumerate() {
            // Half the bytes from a small alphabet, half random.
            *b = if i % 2 == 0 {
                b"abcdefgh"[(v >> (i * 3)) as usize & 7]
            } else {
                (v >> (i * 8)) as u8
            };
        }
    }
}

fn generate(dir: &Path, total_mb: u64) -> u64 {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut total = 0u64;
    let mut buf = vec![0u8; 8192];
    for i in 0..10_000 {
        let sub = dir.join(format!("small/d{:03}", i % 100));
        fs::create_dir_all(&sub).expect("mkdir");
        let len = 512 + (i * 7919) % 7680;
        fill(&mut rng, &mut buf[..len]);
        fs::write(sub.join(format!("f{i:05}")), &buf[..len]).expect("write");
        total += len as u64;
    }
    let large = (total_mb << 20).saturating_sub(total) / 4;
    let mut big = vec![0u8; 1 << 20];
    for n in 0..4 {
        let mut f = fs::File::create(dir.join(format!("large{n}.bin"))).expect("create");
        let mut left = large;
        while left > 0 {
            let len = left.min(big.len() as u64) as usize;
            fill(&mut rng, &mut big[..len]);
            f.write_all(&big[..len]).expect("write");
            left -= len as u64;
        }
        total += large;
    }
    total
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn main() {
    let mb: u64 = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let tmp =
        tempfile::tempdir_in(std::env::var("KILN_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .expect("tempdir");
    let tree = tmp.path().join("tree");
    let bytes = generate(&tree, mb);
    // Write the generated tree out first, so its writeback does not slow the first case.
    let _ = Command::new("sync").status();
    let mbytes = bytes as f64 / 1e6;
    let store =
        Store::open(&tmp.path().join("store"), Some(SnapshotterKind::Native)).expect("store");
    let hwm_before = vm_hwm_kib();
    println!(
        "tree: {mbytes:.0} MB in 10,004 files; peak RSS before: {} MiB",
        hwm_before / 1024
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cases = [
        ("uncompressed tar + sha256", Compression::None),
        (
            "gzip -6, 1 thread",
            Compression::Gzip {
                level: 6,
                threads: 1,
            },
        ),
        (
            "gzip -6, all cores",
            Compression::Gzip {
                level: 6,
                threads: cores,
            },
        ),
        (
            "zstd -3, all cores",
            Compression::Zstd {
                level: 3,
                threads: cores as u32,
            },
        ),
    ];
    let mut plain = None;
    for (name, compression) in cases {
        let options = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        let (layer, secs) = time(|| {
            write_layer(
                DiffSource::Trees {
                    lower: None,
                    upper: &tree,
                },
                store.content(),
                &options,
            )
            .expect("layer")
        });
        println!(
            "kiln export, {name:<26} {secs:>6.2} s  {:>7.1} MB/s  blob {:>7.1} MB",
            mbytes / secs,
            layer.size as f64 / 1e6
        );
        if compression == Compression::None {
            plain = Some(layer);
        }
    }
    for (name, cmd) in [
        (
            "tar -c | gzip",
            format!("tar -C {} -cf - . | gzip -6 > /dev/null", tree.display()),
        ),
        (
            "tar -c | pigz",
            format!("tar -C {} -cf - . | pigz -6 > /dev/null", tree.display()),
        ),
        (
            // Through cat: GNU tar skips reading the files when its output is /dev/null.
            "tar -c | cat > /dev/null",
            format!("tar -C {} -cf - . | cat > /dev/null", tree.display()),
        ),
    ] {
        let (status, secs) = time(|| Command::new("sh").args(["-c", &cmd]).status());
        match status {
            Ok(s) if s.success() => {
                println!("{name:<40} {secs:>6.2} s  {:>7.1} MB/s", mbytes / secs)
            }
            _ => println!("{name:<40} not measured (tool missing?)"),
        }
    }
    let layer = plain.expect("the uncompressed layer");
    let target = tmp.path().join("applied");
    fs::create_dir_all(&target).expect("mkdir");
    let (_, secs) = time(|| {
        let blob = store.content().open(&layer.digest).expect("open");
        apply_layer(blob, &target, WhiteoutStyle::Delete).expect("apply")
    });
    println!(
        "kiln apply (uncompressed layer)          {secs:>6.2} s  {:>7.1} MB/s",
        mbytes / secs
    );
    println!(
        "peak RSS after: {} MiB (before: {} MiB): memory does not grow with the layer",
        vm_hwm_kib() / 1024,
        hwm_before / 1024
    );
}
