//! Resource limits as BuildKit sets them for a RUN step, clamped to the host's hard limits
//! (raising a hard limit fails with `EPERM`, and hosts differ: see DESIGN.md).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// `(resource, soft, hard)` wanted inside the sandbox.
pub const WANTED: &[(Resource, u64, u64)] = &[(Resource::RLIMIT_NOFILE, 1024, 1024 * 1024)];

/// Clamps a wanted `(soft, hard)` to the host's hard limit.
pub fn clamp(soft: u64, hard: u64, host_hard: u64) -> (u64, u64) {
    let hard = hard.min(host_hard);
    (soft.min(hard), hard)
}

/// Applies [`WANTED`], clamped.
pub fn apply() -> Result<(), String> {
    for (resource, soft, hard) in WANTED {
        let (_, host_hard) =
            getrlimit(*resource).map_err(|e| format!("getrlimit {resource:?}: {e}"))?;
        let (soft, hard) = clamp(*soft, *hard, host_hard);
        setrlimit(*resource, soft, hard)
            .map_err(|e| format!("setrlimit {resource:?} {soft}:{hard}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wanted: (u64, u64), host_hard: u64, expected: (u64, u64)) {
        assert_eq!(clamp(wanted.0, wanted.1, host_hard), expected);
    }

    #[test]
    fn never_exceeds_the_host() {
        check((1024, 1 << 20), 20000, (1024, 20000));
        check((1024, 1 << 20), 512, (512, 512));
        check((1024, 1 << 20), u64::MAX, (1024, 1 << 20));
    }
}
