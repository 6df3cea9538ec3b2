//! `USER` resolution against the rootfs's `/etc/passwd` and `/etc/group`, as runc's
//! `GetExecUser` does it for Docker: names or numbers, a missing file is not an error for
//! numbers, supplementary groups come from `/etc/group` membership unless a group is given.

/// The ids a command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (`HOME` when the env has none).
    pub home: String,
}

/// Resolves `spec` (`""`, `user`, `uid`, `user:group`, `uid:gid` ...) given the text of
/// `/etc/passwd` and `/etc/group` (empty when absent).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let numeric_uid = user_arg.parse::<u32>().ok();
    let entry = passwd
        .lines()
        .filter_map(parse_passwd)
        .find(|p| match numeric_uid {
            Some(uid) => p.uid == uid,
            None => p.name == user_arg,
        });
    let mut user = match (entry.as_ref(), numeric_uid) {
        (Some(p), _) => ExecUser {
            uid: p.uid,
            gid: p.gid,
            groups: Vec::new(),
            home: p.home.to_owned(),
        },
        (None, Some(uid)) => ExecUser {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".to_owned(),
        },
        (None, None) => {
            return Err(format!(
                "unable to find user {user_arg}: no matching entries in passwd file"
            ));
        }
    };
    let groups: Vec<GroupEntry<'_>> = group.lines().filter_map(parse_group).collect();
    match group_arg {
        Some(g) if !g.is_empty() => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            };
            user.gid = gid;
            user.groups = vec![gid];
        }
        _ => {
            let name = entry.as_ref().map(|p| p.name);
            let mut sgids: Vec<u32> = match name {
                Some(name) => groups
                    .iter()
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect(),
                None => Vec::new(),
            };
            if !sgids.contains(&user.gid) {
                sgids.insert(0, user.gid);
            }
            sgids.dedup();
            user.groups = sgids;
        }
    }
    Ok(user)
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_passwd(line: &str) -> Option<PasswdEntry<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 4 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0],
        uid: f[2].trim().parse().ok()?,
        gid: f[3].trim().parse().ok()?,
        home: f.get(5).copied().filter(|h| !h.is_empty()).unwrap_or("/"),
    })
}

fn parse_group(line: &str) -> Option<GroupEntry<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 3 {
        return None;
    }
    Some(GroupEntry {
        name: f[0],
        gid: f[2].trim().parse().ok()?,
        members: f
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:100:Bob:/home/bob:/bin/sh\nbad line\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root,alice\nalice:x:1000:\nusers:x:100:\ndev:x:2000:alice,bob\n";

    fn check(spec: &str, expected: Result<(u32, u32, &[u32], &str), &str>) {
        let got = resolve(spec, PASSWD, GROUP).map(|u| (u.uid, u.gid, u.groups, u.home));
        let expected = expected
            .map(|(u, g, gs, h)| (u, g, gs.to_vec(), h.to_owned()))
            .map_err(str::to_owned);
        assert_eq!(got, expected, "user {spec:?}");
    }

    #[test]
    fn resolves_as_runc_does() {
        check("", Ok((0, 0, &[0, 10], "/root")));
        check("alice", Ok((1000, 1000, &[1000, 10, 2000], "/home/alice")));
        check("bob", Ok((1001, 100, &[100, 2000], "/home/bob")));
        check("1000", Ok((1000, 1000, &[1000, 10, 2000], "/home/alice")));
        check("4242", Ok((4242, 0, &[0], "/")));
        check("4242:77", Ok((4242, 77, &[77], "/")));
        check("alice:users", Ok((1000, 100, &[100], "/home/alice")));
        check("bob:2000", Ok((1001, 2000, &[2000], "/home/bob")));
        check(
            "carol",
            Err("unable to find user carol: no matching entries in passwd file"),
        );
        check(
            "alice:nope",
            Err("unable to find group nope: no matching entries in group file"),
        );
    }
}
