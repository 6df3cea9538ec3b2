//! Snapshots and the sandbox together: an overlay chain deeper than one page of mount
//! options still mounts (the sandbox passes lower dirs one by one), and a RUN-like
//! command's writes land in the upper dir only.

use kiln_snapshotter::{SnapshotterKind, Store};

use crate::support::{Kiln, busybox_rootfs, is_root, kiln_bin};

fn sandbox_mounts(mounts: Vec<kiln_snapshotter::Mount>) -> Vec<kiln_sandbox::Mount> {
    mounts
        .into_iter()
        .map(|m| kiln_sandbox::Mount {
            kind: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

#[test]
fn a_hundred_layer_overlay_chain_mounts_and_writes_land_in_the_upper_dir() {
    if !is_root("a_hundred_layer_overlay_chain_mounts_and_writes_land_in_the_upper_dir") {
        return;
    }
    let k = Kiln::new();
    let store = Store::open(&k.root(), Some(SnapshotterKind::Overlay)).expect("store");
    let snaps = store.snapshots();
    let base = snaps.prepare(None).expect("prepare");
    if busybox_rootfs(&snaps.diff_dir(&base)).is_none() {
        return;
    }
    let mut top = snaps.commit(base).expect("commit");
    for i in 0..100 {
        let active = snaps.prepare(Some(&top)).expect("prepare");
        std::fs::write(snaps.diff_dir(&active).join(format!("layer{i:03}")), "x").expect("write");
        top = snaps.commit(active).expect("commit");
    }
    let active = snaps.prepare(Some(&top)).expect("prepare");
    let mounts = snaps.mounts(&active).expect("mounts");
    assert!(
        mounts[0].options[0].len() > 4096,
        "the chain is longer than one page of options"
    );
    let mut spec = kiln_sandbox::Spec::new(
        sandbox_mounts(mounts),
        vec![
            "sh".into(),
            "-c".into(),
            "ls / | grep -c '^layer'; echo new > /made-by-run".into(),
        ],
    );
    spec.helper_exe = kiln_bin();
    let mut stdout = Vec::new();
    let status = kiln_sandbox::run(
        &spec,
        &mut |stream, line| {
            if stream == kiln_sandbox::Stream::Stdout {
                stdout.extend_from_slice(line);
            }
        },
        &kiln_sandbox::CancelHandle::new(),
    )
    .expect("run");
    assert!(status.success(), "{status:?}");
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), "100");
    let upper = snaps.diff_dir(&active);
    assert_eq!(
        std::fs::read_to_string(upper.join("made-by-run")).expect("upper"),
        "new\n"
    );
    // Nothing else the command did: only its file and the sandbox's mount points.
    let created = kiln_sandbox::plan::CREATED_MOUNT_POINTS;
    for entry in walkdir::WalkDir::new(&upper).min_depth(1) {
        let entry = entry.expect("walk");
        let rel = format!(
            "/{}",
            entry.path().strip_prefix(&upper).expect("rel").display()
        );
        assert!(
            rel == "/made-by-run" || created.contains(&rel.as_str()),
            "unexpected {rel} in the upper dir"
        );
    }
}
