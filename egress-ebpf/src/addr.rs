//! Addresses as the hooks handle them: 16 bytes, IPv4 mapped, built and taken apart in words.

/// An IPv4 address (network order in memory) as its IPv4-mapped IPv6 form, built from words:
/// `egress_common::v4_mapped`'s byte-array literal compiles to a call to a byte-wise memset and
/// byte stores, which cost a connect about a third of the agent's share of it. The learning
/// programs use it too.
#[inline(always)]
pub(crate) fn mapped(addr4: u32) -> [u8; 16] {
    let words = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr4];
    // SAFETY: sixteen bytes either way; the words keep their memory order.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}

/// `user_ip6` words (network order in memory) as bytes.
#[inline(always)]
pub(crate) fn ip6_bytes(words: &[u32; 4]) -> [u8; 16] {
    let [a, b, c, d] = [
        words[0].to_ne_bytes(),
        words[1].to_ne_bytes(),
        words[2].to_ne_bytes(),
        words[3].to_ne_bytes(),
    ];
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// Bytes as `user_ip6` words.
#[inline(always)]
pub(crate) fn ip6_words(bytes: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        u32::from_ne_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
    ]
}
