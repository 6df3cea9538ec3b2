//! Outputs of a one-layer image holding one large file: time and peak memory of each
//! `-o type=...`, to show that layers stream (peak RSS stays flat whatever the size).
//! Run: `cargo bench -p kiln-exporter --bench archive`; size in MB with `KILN_BENCH_MB`
//! (default 300). For reference, `skopeo copy` writes the same OCI layout as a tar.

#![allow(unreachable_pub, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use kiln_exporter::archive::{
    ArchiveOptions, write_docker_archive, write_oci_archive, write_oci_layout, write_rootfs_dir,
    write_rootfs_tar, write_to_file,
};
use kiln_image::config::{ImageConfig, RootFs};
use kiln_image::image::write_image;
use kiln_snapshotter::Store;
use kiln_snapshotter::layer_out::{DiffSource, LayerOptions, write_layer};

/// Writes `megabytes` of xorshift noise (incompressible) to `path`, 1 MB at a time.
fn write_noise(path: &Path, megabytes: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..megabytes {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        out.write_all(&chunk).unwrap();
    }
    out.flush().unwrap();
}

/// Peak resident memory of this process so far, in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn report(what: &str, bytes: u64, start: Instant) {
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{what:<44} {seconds:>7.2} s  {:>8.1} MB/s  peak RSS {:>6.1} MB",
        bytes as f64 / 1e6 / seconds,
        peak_rss_mb()
    );
}

fn main() {
    let megabytes: usize = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("data")).unwrap();
    write_noise(&tree.join("data/noise.bin"), megabytes);
    let store = Store::open(&work.path().join("store"), None).unwrap();
    let start = Instant::now();
    let layer = write_layer(
        DiffSource::Trees {
            lower: None,
            upper: &tree,
        },
        store.content(),
        &LayerOptions::default(),
    )
    .unwrap();
    let bytes = layer.size;
    report("layer tar into the store", bytes, start);
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.to_string()],
        },
        ..ImageConfig::default()
    };
    let image = write_image(&store, &config, &[layer], BTreeMap::new()).unwrap();
    let options = ArchiveOptions {
        names: vec!["bench/app:1".into()],
        ..ArchiveOptions::default()
    };
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();

    let start = Instant::now();
    write_to_file(&out.join("oci.tar"), |w| {
        write_oci_archive(&store, &image, &options, w)
    })
    .unwrap();
    report("type=oci tar, gzip made (cold)", bytes, start);
    let start = Instant::now();
    write_to_file(&out.join("oci.tar"), |w| {
        write_oci_archive(&store, &image, &options, w)
    })
    .unwrap();
    report("type=oci tar, gzip memoised (warm)", bytes, start);
    let start = Instant::now();
    write_oci_archive(&store, &image, &options, std::io::sink()).unwrap();
    report("type=oci tar to a sink (no disk writes)", bytes, start);
    let start = Instant::now();
    write_rootfs_tar(&store, &image, std::io::sink()).unwrap();
    report("type=tar to a sink (no disk writes)", bytes, start);
    let start = Instant::now();
    write_oci_layout(&store, &image, &options, &out.join("layout")).unwrap();
    report("type=oci directory", bytes, start);
    let start = Instant::now();
    write_to_file(&out.join("docker.tar"), |w| {
        write_docker_archive(&store, &image, &options, w)
    })
    .unwrap();
    report("type=docker", bytes, start);
    let start = Instant::now();
    write_to_file(&out.join("rootfs.tar"), |w| {
        write_rootfs_tar(&store, &image, w)
    })
    .unwrap();
    report("type=tar", bytes, start);
    let start = Instant::now();
    write_rootfs_dir(&store, &image, &out.join("rootfs"), &Default::default()).unwrap();
    report("type=local", bytes, start);

    if Command::new("skopeo").arg("--version").output().is_ok() {
        let start = Instant::now();
        let status = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                &format!("oci:{}:1", out.join("layout").display()),
                &format!("oci-archive:{}", out.join("skopeo.tar").display()),
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "skopeo copy failed");
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{:<44} {seconds:>7.2} s  {:>8.1} MB/s  (reference)",
            "skopeo copy oci: -> oci-archive:",
            bytes as f64 / 1e6 / seconds
        );
    }
}
