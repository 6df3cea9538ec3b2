//! `kiln build --watch`: a change to a file the build reads rebuilds and says why; a
//! `touch` (times only) or a change to a file the build does not read (excluded by the
//! `.dockerignore`, or named by no `COPY`) rebuilds nothing; `--exec` runs after each
//! successful build with the image id in `$KILN_IMAGE`; SIGINT ends it with 130.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::support::Kiln;

/// A `kiln build --watch` child and its output lines as they come.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(k: &Kiln, extra: &[&str]) -> Watching {
        let mut child = k
            .cmd()
            .args(["build", "--watch", "--progress=plain", "ctx"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln build --watch");
        let (sender, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Watching {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The lines up to the first one that contains `text` (waiting up to a minute).
    fn until(&mut self, text: &str) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let done = line.contains(text);
                    got.push(line);
                    if done {
                        return got;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with {text:?}; output so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn touch(path: &std::path::Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(5))
        .unwrap();
}

#[test]
fn watch_rebuilds_what_a_change_reaches_and_nothing_else() {
    let k = Kiln::new();
    k.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY a.txt /a\nCOPY b.txt /b\n",
    );
    k.write("ctx/a.txt", "one\n");
    k.write("ctx/b.txt", "bee\n");
    k.write("ctx/notes.txt", "not copied\n");
    k.write("ctx/debug.log", "ignored\n");
    k.write("ctx/.dockerignore", "*.log\n");
    let mut w = Watching::start(&k, &["--exec", "sh", "-c", "echo exec saw $KILN_IMAGE >&2"]);
    let first = w.until("watch: waiting for changes");
    assert!(
        first
            .iter()
            .any(|l| l.contains("because: first build of this step")),
        "{first:?}"
    );
    assert!(
        first.iter().any(|l| l.starts_with("exec saw sha256:")),
        "--exec ran after the build: {first:?}"
    );

    // New bytes in a.txt: both COPYs run again (the second because the first changed).
    k.write("ctx/a.txt", "two\n");
    let rebuilt = w.until("exec saw sha256:");
    assert!(
        rebuilt
            .iter()
            .any(|l| l.contains("watch: changed: a.txt; rebuilding")),
        "{rebuilt:?}"
    );
    assert!(
        rebuilt
            .iter()
            .any(|l| l.contains("because: context file a.txt changed")),
        "{rebuilt:?}"
    );
    assert!(
        rebuilt
            .iter()
            .any(|l| l.contains("because: an earlier step changed: [2/3] COPY a.txt /a")),
        "{rebuilt:?}"
    );
    assert!(
        !rebuilt.iter().any(|l| l.contains("CACHED")),
        "only what ran: {rebuilt:?}"
    );

    // A touch: nothing rebuilt.
    touch(&k.path("ctx/b.txt"));
    let touched = w.until("nothing to rebuild");
    assert!(
        !touched
            .iter()
            .any(|l| l.contains("because:") || l.contains("rebuilding")),
        "{touched:?}"
    );

    // Files the build does not read: not even judged. The touch after them shows the
    // watcher went past them without a rebuild.
    k.write("ctx/debug.log", "more\n");
    k.write("ctx/notes.txt", "changed, not copied\n");
    std::thread::sleep(Duration::from_millis(400));
    touch(&k.path("ctx/a.txt"));
    let unread = w.until("nothing to rebuild");
    assert!(
        !unread
            .iter()
            .any(|l| l.contains("rebuilding") || l.contains("because:")),
        "{unread:?}"
    );
    assert!(
        unread
            .iter()
            .any(|l| l.contains("1 file(s) the build reads")),
        "only a.txt was judged: {unread:?}"
    );

    // SIGINT ends the watch with 130.
    let pid = w.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let code = w.child.wait().unwrap().code();
    assert_eq!(code, Some(130));
}

#[test]
fn watch_refuses_what_it_cannot_watch() {
    let k = Kiln::new();
    k.write("ctx/Dockerfile", "FROM scratch\n");
    let err = k.fails(&["build", "--watch", "-"]);
    assert!(err.contains("--watch needs a context directory"), "{err}");
    let err = k.fails(&["--host", "unix:///x.sock", "build", "--watch", "ctx"]);
    assert!(
        err.contains("the server cannot watch this machine's files"),
        "{err}"
    );
    let err = k.fails(&["build", "--watch", "ctx", "--call=outline"]);
    assert!(err.contains("--check and --call build nothing"), "{err}");
    let err = k.fails(&["build", "ctx", "--exec", "true"]);
    assert!(err.contains("--watch"), "--exec needs --watch: {err}");
}
