//! Netlink messages built by hand (rtnetlink for links, addresses and routes; nfnetlink
//! for nftables) and a blocking socket that sends them and reads the kernel's answers.
//!
//! Hand-built rather than through `rtnetlink`/`netlink-packet-route`: the sandbox needs
//! eight message kinds, synchronously, in a single-threaded helper; a builder of ~100
//! lines needs no async runtime and no crate whose API churns every release. Layouts are
//! those of `<linux/netlink.h>`, `<linux/rtnetlink.h>`, `<linux/if_link.h>`,
//! `<linux/veth.h>` and `<linux/netfilter/nf_tables.h>`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};

/// `NLM_F_REQUEST`
pub const F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`
pub const F_ACK: u16 = 0x4;
/// `NLM_F_EXCL`
pub const F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`
pub const F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`
pub const F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One netlink message under construction: the 16-byte header, a fixed family header,
/// then attributes (nested ones through [`Msg::nest`] / [`Msg::end`]).
#[derive(Debug, Clone)]
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl Msg {
    /// A message of type `ty` with `flags` (sequence number set when sent).
    pub fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// The family header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `nfgenmsg`), padded.
    pub fn header(mut self, bytes: &[u8]) -> Msg {
        self.buf.extend_from_slice(bytes);
        pad(&mut self.buf);
        self
    }

    /// An attribute with a raw payload.
    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, s: &str) -> &mut Msg {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(ty, &data)
    }

    /// A `u32` in host order (rtnetlink).
    pub fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A `u32` in network order (nftables).
    pub fn attr_be32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.attr(ty, &v.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Msg::end`].
    pub fn nest(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost nested attribute.
    pub fn end(&mut self) -> &mut Msg {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The bytes, length set, with sequence number `seq`.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end();
        }
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A netlink socket of one protocol, bound in the network namespace the calling thread
/// was in when it was opened (and staying there after an `unshare`).
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// `NETLINK_ROUTE`.
    pub fn route() -> io::Result<Socket> {
        Socket::open(SockProtocol::NetlinkRoute)
    }

    /// `NETLINK_NETFILTER`.
    pub fn netfilter() -> io::Result<Socket> {
        Socket::open(SockProtocol::NetlinkNetFilter)
    }

    fn open(protocol: SockProtocol) -> io::Result<Socket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // The kernel answers at once; a missing answer is a bug, not a wait.
        let timeout = nix::sys::time::TimeVal::new(5, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Socket { fd, seq: 0 })
    }

    /// The socket's descriptor number.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Sends one request and waits for its acknowledgement (the request must carry
    /// [`F_ACK`]).
    pub fn request(&mut self, msg: Msg) -> io::Result<()> {
        self.batch(vec![(msg, true)])
    }

    /// Sends a request and returns the first answer's payload (after the 16-byte header),
    /// for `RTM_GET*` requests without [`F_ACK`].
    pub fn query(&mut self, msg: Msg) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        send(self.fd.as_raw_fd(), &msg.finish(seq), MsgFlags::empty())?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            for (ty, msg_seq, payload) in messages(&buf[..n]) {
                if msg_seq != seq {
                    continue;
                }
                if ty == NLMSG_ERROR {
                    return Err(error_of(payload).unwrap_or_else(|| io::Error::other("ack")));
                }
                return Ok(payload.to_vec());
            }
        }
    }

    /// Sends `msgs` in one write (an nftables batch is one transaction) and waits until
    /// every message flagged `true` (sent with [`F_ACK`]) is acknowledged; the first
    /// error the kernel reports is returned.
    pub fn batch(&mut self, msgs: Vec<(Msg, bool)>) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut waiting = Vec::new();
        for (msg, acked) in msgs {
            self.seq = self.seq.wrapping_add(1);
            if acked {
                waiting.push(self.seq);
            }
            bytes.extend(msg.finish(self.seq));
        }
        send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty())?;
        let mut buf = vec![0u8; 32 * 1024];
        while !waiting.is_empty() {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            for (ty, seq, payload) in messages(&buf[..n]) {
                // Answers to an earlier, failed batch may still be queued: skip them.
                if !waiting.contains(&seq) {
                    continue;
                }
                if ty == NLMSG_ERROR {
                    if let Some(err) = error_of(payload) {
                        return Err(err);
                    }
                    waiting.retain(|s| *s != seq);
                } else if ty == NLMSG_DONE {
                    waiting.retain(|s| *s != seq);
                }
            }
        }
        Ok(())
    }
}

/// `(type, seq, payload)` of each message in a datagram.
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((ty, seq, &buf[16..len]));
        let next = (len + 3) & !3;
        buf = &buf[next.min(buf.len())..];
    }
    out
}

/// The error of an `NLMSG_ERROR` payload, `None` for an acknowledgement.
fn error_of(payload: &[u8]) -> Option<io::Error> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    (code != 0).then(|| io::Error::from_raw_os_error(-code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_padding_and_nesting() {
        let mut msg = Msg::new(16, F_REQUEST | F_ACK).header(&[1, 2, 3]);
        msg.attr_str(3, "eth0").nest(18).attr_str(1, "veth").end();
        let bytes = msg.finish(7);
        // header 16 + family header 3 padded to 4 + "eth0\0" attr 9 padded to 12
        // + nest (4 + "veth\0" attr 9 padded to 12) = 16
        assert_eq!(bytes.len(), 16 + 4 + 12 + 16);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 48);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes(bytes[32..34].try_into().unwrap()), 16);
        assert_eq!(
            u16::from_ne_bytes(bytes[34..36].try_into().unwrap()),
            18 | NLA_F_NESTED
        );
        let parsed = messages(&bytes);
        assert_eq!(parsed.len(), 1);
        assert_eq!((parsed[0].0, parsed[0].1), (16, 7));
    }

    #[test]
    fn errors_and_acks() {
        assert!(error_of(&0i32.to_ne_bytes()).is_none());
        let err = error_of(&(-17i32).to_ne_bytes()).expect("an error");
        assert_eq!(err.raw_os_error(), Some(17));
    }
}
