//! The IP and transport headers of a packet seen by a `cgroup_skb` program, read with direct
//! packet access (the headers of locally sent and received packets are linear), so that every
//! packet that is not DNS leaves after a few loads.

use aya_ebpf::programs::SkBuffContext;
use egress_common::proto;

use crate::addr::mapped;

/// `ETH_P_IP` and `ETH_P_IPV6` as `__sk_buff::protocol` holds them (network byte order).
const ETH_P_IP_BE: u32 = 0x0800_u16.to_be() as u32;
const ETH_P_IPV6_BE: u32 = 0x86dd_u16.to_be() as u32;

/// The headers of a packet.
pub(crate) struct Headers {
    /// Source address (IPv4 mapped).
    pub(crate) source: [u8; 16],
    /// Destination address (IPv4 mapped).
    pub(crate) dest: [u8; 16],
    /// Source port, network byte order.
    pub(crate) source_port_be: u16,
    /// Destination port, network byte order.
    pub(crate) dest_port_be: u16,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    protocol: u8,
    /// Where the transport header starts.
    l4: usize,
}

/// Where a DNS message sits in a packet.
pub(crate) struct Message {
    /// Its first byte (after the UDP header, or after the TCP header and the two-byte length).
    pub(crate) offset: u32,
    /// Bytes from `offset` to the end of the packet.
    pub(crate) len: u32,
    /// Whether the packet holds the whole message (always for UDP; for TCP, when the length
    /// prefix announces exactly what follows it).
    pub(crate) whole: bool,
}

/// Reads `N` bytes at `offset` from the packet, if they are in its linear part.
#[inline(always)]
fn bytes<const N: usize>(ctx: &SkBuffContext, offset: usize) -> Option<[u8; N]> {
    // SAFETY: the context is valid for the life of the program.
    let skb = unsafe { &*ctx.skb.skb };
    let start = skb.data as usize;
    let end = skb.data_end as usize;
    if start + offset + N > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above, as the verifier requires.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
}

impl Headers {
    /// The headers of a UDP or TCP packet over IPv4 or IPv6 (without extension headers);
    /// `None` for anything else.
    #[inline(always)]
    pub(crate) fn parse(ctx: &SkBuffContext) -> Option<Self> {
        // SAFETY: the context is valid for the life of the program.
        let skb = unsafe { &*ctx.skb.skb };
        let (l4, protocol, source, dest) = match skb.protocol {
            ETH_P_IP_BE => {
                let header: [u8; 20] = bytes(ctx, 0)?;
                let ihl = usize::from(header[0] & 0x0f) * 4;
                let source = u32::from_ne_bytes([header[12], header[13], header[14], header[15]]);
                let dest = u32::from_ne_bytes([header[16], header[17], header[18], header[19]]);
                (ihl, header[9], mapped(source), mapped(dest))
            }
            ETH_P_IPV6_BE => {
                let header: [u8; 40] = bytes(ctx, 0)?;
                let mut source = [0; 16];
                let mut dest = [0; 16];
                source.copy_from_slice(&header[8..24]);
                dest.copy_from_slice(&header[24..40]);
                (40, header[6], source, dest)
            }
            _ => return None,
        };
        if !(20..=60).contains(&l4) || (protocol != proto::UDP && protocol != proto::TCP) {
            return None;
        }
        let ports: [u8; 4] = bytes(ctx, l4)?;
        Some(Self {
            source,
            dest,
            source_port_be: u16::from_ne_bytes([ports[0], ports[1]]),
            dest_port_be: u16::from_ne_bytes([ports[2], ports[3]]),
            protocol,
            l4,
        })
    }

    /// Whether the packet carries any bytes past its transport header (a bare TCP ACK or FIN
    /// does not, and is no answer to count as unparsed).
    #[inline(always)]
    pub(crate) fn has_payload(&self, ctx: &SkBuffContext) -> bool {
        let total = ctx.len() as usize;
        if self.protocol == proto::UDP {
            return total > self.l4 + 8;
        }
        let Some(header) = bytes::<14>(ctx, self.l4) else {
            return false;
        };
        total > self.l4 + usize::from(header[12] >> 4) * 4
    }

    /// Where the DNS message is; `None` when there is no payload to speak of.
    #[inline(always)]
    pub(crate) fn message(&self, ctx: &SkBuffContext) -> Option<Message> {
        let total = ctx.len() as usize;
        let (offset, announced) = if self.protocol == proto::UDP {
            let offset = self.l4 + 8;
            (offset, total.checked_sub(offset)?)
        } else {
            let header: [u8; 14] = bytes(ctx, self.l4)?;
            let payload = self.l4 + usize::from(header[12] >> 4) * 4;
            // The length prefix may sit past the linear part: read it with the helper.
            let prefix: [u8; 2] = ctx.load(payload).ok()?;
            (payload + 2, usize::from(u16::from_be_bytes(prefix)))
        };
        let len = total.checked_sub(offset)?;
        Some(Message {
            offset: u32::try_from(offset).ok()?,
            len: u32::try_from(len).ok()?,
            whole: announced == len,
        })
    }
}
