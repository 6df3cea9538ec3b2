//! Base root filesystems made on the spot: Docker Hub is out of reach, so tests build
//! their base images from Debian's `busybox-static`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes a busybox-static root filesystem in `dir` (what `/bin/busybox --install -s`
/// would do: a symlink per applet), with a passwd and group file naming a few users;
/// None with a printed reason when busybox is not installed.
pub fn busybox(dir: &Path) -> Option<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        eprintln!("skipped: /bin/busybox is absent (apt-get install busybox-static)");
        return None;
    }
    let out = Command::new(busybox).arg("--list").output().unwrap();
    let root = dir.to_path_buf();
    for sub in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    Some(root)
}
