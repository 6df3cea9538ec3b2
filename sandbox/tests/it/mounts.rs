//! The rootfs as overlay mount data, extra mounts, /etc files, /dev, /proc, /sys.

use std::fs;

use kiln_sandbox::{ExtraMount, Mount, Spec};

use crate::support::{Rootfs, ok, run, write};

pub(crate) const TESTS: &[crate::Test] = &[
    (
        "overlay_writes_land_in_upper_only",
        overlay_writes_land_in_upper_only,
    ),
    (
        "overlay_with_a_long_lowerdir_list",
        overlay_with_a_long_lowerdir_list,
    ),
    ("extra_mounts", extra_mounts),
    ("dev_proc_sys", dev_proc_sys),
];

fn overlay(lowers: &[String], upper: &str, work: &str) -> Vec<Mount> {
    vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: "/".into(),
        options: vec![
            format!("lowerdir={}", lowers.join(":")),
            format!("upperdir={upper}"),
            format!("workdir={work}"),
            "redirect_dir=off".into(),
            "metacopy=off".into(),
        ],
    }]
}

fn overlay_writes_land_in_upper_only() {
    let rootfs = Rootfs::new();
    let base = rootfs.dir.path();
    let (upper, work) = (base.join("upper"), base.join("work"));
    fs::create_dir_all(&upper).expect("upper");
    fs::create_dir_all(&work).expect("work");
    let secret = base.join("token");
    write(&secret, "s3cret\n");
    let lower = rootfs.path().to_string_lossy().into_owned();
    let mut spec = Spec::new(
        overlay(&[lower], &upper.to_string_lossy(), &work.to_string_lossy()),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo new > /newfile; echo more >> /etc/passwd; cat /etc/hosts /run/secrets/token; ls -l /run/secrets/token | cut -c1-10; echo x > /etc/hosts".into(),
        ],
    );
    spec.mounts = vec![ExtraMount::Secret {
        source: secret.clone(),
        target: "/run/secrets/token".into(),
        mode: Some(0o440),
        uid: None,
        gid: None,
    }];
    let out = run(&spec);
    // /etc/hosts is a read-only bind: the last write fails.
    assert_eq!(out.status.code(), 1, "{out:?}");
    assert!(
        out.stdout.contains("127.0.0.1\tlocalhost kiln\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("s3cret\n-r--r-----\n"), "{out:?}");
    assert_eq!(
        fs::read_to_string(upper.join("newfile")).expect("newfile in upper"),
        "new\n"
    );
    assert!(
        fs::read_to_string(upper.join("etc/passwd"))
            .expect("passwd copied up")
            .ends_with("more\n")
    );
    assert!(
        !rootfs.path().join("newfile").exists(),
        "the lower dir is untouched"
    );
    assert!(
        !fs::read_to_string(rootfs.path().join("etc/passwd"))
            .expect("lower passwd")
            .contains("more")
    );
    // Mount points created because the rootfs lacked them are empty; nothing of the
    // hosts file or the secret reached the upper dir.
    for path in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "run/secrets/token",
    ] {
        let size = fs::metadata(upper.join(path)).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size, 0, "{path} in the upper dir");
    }
    let mut entries: Vec<String> = walk(&upper);
    entries.sort();
    for entry in &entries {
        let allowed = kiln_sandbox::plan::CREATED_MOUNT_POINTS.contains(&entry.as_str())
            || [
                "/newfile",
                "/etc/passwd",
                "/run",
                "/run/secrets",
                "/run/secrets/token",
            ]
            .contains(&entry.as_str());
        assert!(allowed, "unexpected {entry} in the upper dir: {entries:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(format!(
                "/{}",
                path.strip_prefix(dir).expect("prefix").display()
            ));
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    out
}

fn overlay_with_a_long_lowerdir_list() {
    let rootfs = Rootfs::new();
    let base = rootfs.dir.path();
    let mut lowers = Vec::new();
    for i in 0..40 {
        let dir = base.join(format!("layers/{i:03}-{}", "x".repeat(100)));
        fs::create_dir_all(&dir).expect("layer");
        fs::write(dir.join(format!("layer-{i}")), "").expect("layer file");
        lowers.push(dir.to_string_lossy().into_owned());
    }
    lowers.push(rootfs.path().to_string_lossy().into_owned());
    assert!(lowers.join(":").len() > 4096, "longer than a page");
    let (upper, work) = (base.join("upper"), base.join("work"));
    fs::create_dir_all(&upper).expect("upper");
    fs::create_dir_all(&work).expect("work");
    let spec = Spec::new(
        overlay(&lowers, &upper.to_string_lossy(), &work.to_string_lossy()),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "ls / | grep -c layer-; touch /layer-7".into(),
        ],
    );
    assert_eq!(ok(&spec), "40\n");
    assert!(upper.join("layer-7").exists());
}

fn extra_mounts() {
    let rootfs = Rootfs::new();
    let base = rootfs.dir.path();
    let cache = base.join("cache");
    let ro = base.join("ro");
    write(&ro.join("data"), "read me\n");
    fs::create_dir_all(&cache).expect("cache");
    let mut spec = rootfs.sh(
        "cat /in/data; echo bad > /in/data || echo ro-ok; echo cached > /cache/f; \
         echo t > /scratch/t && cat /scratch/t; df -k /scratch | tail -1 | awk '{print $2}'; \
         stat -c %a /scratch",
    );
    spec.mounts = vec![
        ExtraMount::Bind {
            source: ro.clone(),
            target: "/in".into(),
            readonly: true,
        },
        ExtraMount::Bind {
            source: cache.clone(),
            target: "/cache".into(),
            readonly: false,
        },
        ExtraMount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
            mode: Some(0o1777),
        },
    ];
    assert_eq!(ok(&spec), "read me\nro-ok\nt\n1024\n1777\n");
    assert_eq!(
        fs::read_to_string(cache.join("f")).expect("cache file"),
        "cached\n"
    );
    assert_eq!(
        fs::read_to_string(ro.join("data")).expect("ro file"),
        "read me\n"
    );
}

fn dev_proc_sys() {
    let rootfs = Rootfs::new();
    let out = ok(&rootfs.sh(
        "ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; \
         readlink /dev/fd; readlink /dev/ptmx; touch /sys/x 2>/dev/null || echo sys-ro; \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo proc-sys-ro",
    ));
    assert_eq!(
        out,
        "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero \n4\n/proc/self/fd\npts/ptmx\nsys-ro\nproc-sys-ro\n"
    );
    // runc's masked paths, those this kernel has: empty inside.
    for path in kiln_sandbox::plan::MASKED_PATHS {
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        let script = if meta.is_dir() {
            format!("ls -A {path} | wc -l")
        } else {
            format!("cat {path} | wc -c")
        };
        assert_eq!(ok(&rootfs.sh(&script)), "0\n", "{path} is masked");
    }
}
