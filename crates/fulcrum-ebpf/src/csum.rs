//! Internet checksums (RFC 1071) the way the forwarding modules need them: a whole IPv4
//! header written here, RFC 1624 updates of one field, and the kernel's `bpf_csum_diff`
//! for an ICMP error's quoted bytes (one helper call, not a loop the verifier unrolls).
//!
//! All sums work on 16-bit words as they lie in memory (network order on the wire):
//! one's complement addition is byte-order independent, so no swaps are needed as long
//! as the result is stored back the same way.

use aya_ebpf::helpers::bpf_csum_diff;

use fulcrum_ebpf::header::Ipv4;

/// Folds a 64-bit sum of 16-bit words into 16 bits.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The sum of a 32-bit value's two 16-bit halves, for adding addresses to a sum.
#[inline(always)]
pub fn words(v: u32) -> u64 {
    u64::from(v & 0xffff) + u64::from(v >> 16)
}

/// The checksum field of an IPv4 header without options, from its other fields: ten
/// loads and adds, cheaper than a helper call for 20 bytes.
///
/// # Safety
/// `ip` points to 20 readable bytes.
#[inline(always)]
pub unsafe fn ipv4_header(ip: *const Ipv4) -> u16 {
    let w = ip.cast::<u16>();
    let mut sum = 0u64;
    for i in 0..10 {
        if i != 5 {
            // SAFETY: i < 10, inside the 20 bytes.
            sum += u64::from(unsafe { w.add(i).read_unaligned() });
        }
    }
    !fold(sum)
}

/// RFC 1624 (eqn. 3): the checksum after one 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// The one's complement sum of `len` bytes at `data` (a multiple of 4, at most 512),
/// added to `seed`, not yet folded: the kernel's `bpf_csum_diff` with nothing removed.
///
/// # Safety
/// `data` points to `len` readable bytes that the verifier knows the bounds of (packet
/// data checked with `ptr_at` for a constant size, or the stack).
#[inline(always)]
pub unsafe fn sum_bytes(data: *const u8, len: u32, seed: u32) -> u64 {
    // SAFETY: see above; nothing is removed (NULL, 0).
    let r = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            data.cast_mut().cast::<u32>(),
            len,
            seed,
        )
    };
    // A negative result is an error (bad length): fold it anyway; the length is a
    // constant of the caller's, so this never happens in a verified program.
    r as u32 as u64
}
