//! `EXPOSE` port specifications as BuildKit's `parsePort` reads them
//! (`dockerfile2llb/convert_expose.go`): `[ip:][hostport:]port[-end][/proto]`.

use std::net::IpAddr;

/// What the checks need of one port specification.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Port {
    /// The protocol as written (`tcp` when none is).
    pub(crate) proto: String,
    /// An address or a host port is given.
    pub(crate) mapped: bool,
    /// BuildKit accepts the rest (address, port numbers, ranges); when false the build
    /// stops after the checks of this port.
    pub(crate) valid: bool,
}

/// `None` when BuildKit refuses the port before its checks run: no port, or a protocol
/// other than `tcp`, `udp` and `sctp` (any case).
pub(crate) fn parse(raw: &str) -> Option<Port> {
    let (ip, host_port, container) = split_parts(raw);
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return None;
    }
    let proto = match proto.to_lowercase().as_str() {
        "" => "tcp".to_owned(),
        "tcp" | "udp" | "sctp" => proto.to_owned(),
        _ => return None,
    };
    Some(Port {
        proto,
        mapped: !ip.is_empty() || !host_port.is_empty(),
        valid: valid_rest(&ip, host_port, port),
    })
}

/// Cut at `:`: one part is the port, two are host port and port, more put everything
/// before the last two into the address.
fn split_parts(raw: &str) -> (String, &str, &str) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [port] => (String::new(), "", port),
        [host, port] => (String::new(), host, port),
        _ => {
            let n = parts.len();
            (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1])
        }
    }
}

fn valid_rest(ip: &str, host_port: &str, port: &str) -> bool {
    if !ip.is_empty() {
        let bare = match ip.strip_prefix('[') {
            Some(rest) => match rest.strip_suffix(']') {
                Some(inner) => inner,
                None => return false,
            },
            None => ip,
        };
        if bare.parse::<IpAddr>().is_err() {
            return false;
        }
    }
    let Some((start, end)) = range(port) else {
        return false;
    };
    if !host_port.is_empty() {
        let Some((host_start, host_end)) = range(host_port) else {
            return false;
        };
        // A host range of another length only goes with a single container port.
        if end - start != host_end - host_start && end != start {
            return false;
        }
    }
    true
}

/// `port` or `start-end`, each 0 to 65535, `end` not below `start`.
fn range(ports: &str) -> Option<(u32, u32)> {
    let number = |s: &str| -> Option<u32> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u32>().ok().filter(|p| *p <= 65535)
    };
    match ports.split_once('-') {
        None => number(ports).map(|p| (p, p)),
        Some((start, end)) if start == end => number(start).map(|p| (p, p)),
        Some((start, end)) => {
            let (start, end) = (number(start)?, number(end)?);
            (end >= start).then_some((start, end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Option<(&str, bool, bool)>) {
        let want = expected.map(|(proto, mapped, valid)| Port {
            proto: proto.to_owned(),
            mapped,
            valid,
        });
        assert_eq!(parse(raw), want, "{raw}");
    }

    #[test]
    fn port_specifications() {
        check("80", Some(("tcp", false, true)));
        check("80/TcP", Some(("TcP", false, true)));
        check("9000-9010/udp", Some(("udp", false, true)));
        check("5000:5000", Some(("tcp", true, true)));
        check("127.0.0.1:80:80", Some(("tcp", true, true)));
        check("[::1]:8080:8080/SCTP", Some(("SCTP", true, true)));
        check("6000-6001:7000-7001", Some(("tcp", true, true)));
        check("/tcp", None);
        check("80/http", None);
        check("bad.ip:80:80", Some(("tcp", true, false)));
        check("99999", Some(("tcp", false, false)));
        check("90-80", Some(("tcp", false, false)));
        check("1-3:7000-7001", Some(("tcp", true, false)));
    }
}
