//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! User space builds each service's lookup table and writes it into a BPF array; the XDP program
//! reads slot `hash % M` and forwards to the backend slot id found there (0: no backend). Every
//! balancer of a fleet must build the same table from the same backend set, so hashing is a fixed
//! function of the address bytes and members are sorted by address before filling.
//!
//! Weights: members take turns in weighted-fair order. Each turn claims one slot (the member's next
//! free preference); the next turn goes to the member with the smallest `(2k + 1) / w`, where `k`
//! is the number of slots it holds and `w` its weight, ties broken by address. With equal weights
//! this is exactly the paper's round robin, so shares differ by at most one slot.
//!
//! Disruption: removing one of N members moves its own slots plus ~0.6% of the table on average.
//! A known Maglev weakness remains: two members with the same skip (odds ~1/65536 per pair) walk
//! shifted copies of one preference list, and a removal can then move up to ~15% more at small N.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::IpAddr;

/// Default table size (prime): ~65 slots per backend at 1000 backends keeps shares and
/// disruption tight while the table stays 256 KiB.
pub const DEFAULT_SIZE: u32 = 65_537;

/// A backend as the table sees it: only the address feeds the hash, so renumbering ids or
/// reordering the list never reshuffles traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Value stored in the slots this member owns; never 0, which means "no backend".
    pub id: u32,
    /// The member's identity for hashing.
    pub address: IpAddr,
    /// Relative share of slots; 0 drains the member (no slots, no new flows). A share worth less
    /// than one slot may round to none.
    pub weight: u32,
}

/// Why a table cannot be built from the given members and size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    /// Preference lists are permutations of all slots only when the size is prime.
    #[error("Maglev table size {0} is not a prime")]
    NotPrime(u32),
    /// The size must exceed the number of members (drained ones included, so draining never
    /// turns a valid set invalid), or some members could own no slot at all.
    #[error(
        "Maglev table size {size} is too small for {members} backends (needs more slots than backends)"
    )]
    TooSmall {
        /// Requested table size.
        size: u32,
        /// Number of members given.
        members: usize,
    },
    /// Id 0 marks empty slots for the XDP program.
    #[error("backend id 0 is reserved for 'no backend'")]
    ZeroId,
    /// The address is the member's identity; two entries would hash identically.
    #[error("backend {0} is listed twice")]
    Duplicate(IpAddr),
}

/// Whether `n` is prime; table sizes must be, for the permutations to cover every slot.
pub fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Builds the table: `size` slots, each a member id, or all zeros when no member has weight > 0.
/// Members with weight 0 get no slots (drained). Identity for hashing is the address only.
pub fn build(members: &[Member], size: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    if members.iter().any(|m| m.id == 0) {
        return Err(MaglevError::ZeroId);
    }
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_unstable_by_key(|m| m.address);
    if let Some(w) = sorted.windows(2).find(|w| w[0].address == w[1].address) {
        return Err(MaglevError::Duplicate(w[0].address));
    }
    if members.len() >= size as usize {
        return Err(MaglevError::TooSmall {
            size,
            members: members.len(),
        });
    }

    let m = u64::from(size);
    let mut cursors: Vec<Cursor> = sorted
        .iter()
        .filter(|member| member.weight > 0)
        .map(|member| Cursor::new(member, m))
        .collect();
    let mut table = vec![0u32; size as usize];
    let active: Vec<&Member> = sorted
        .into_iter()
        .filter(|member| member.weight > 0)
        .collect();
    let Some(first) = active.first() else {
        // Every member drained: the table stays all zeros.
        return Ok(table);
    };
    if active.iter().all(|member| member.weight == first.weight) {
        // Equal weights: the weighted order is plain round robin, without the heap.
        let mut filled = 0u64;
        'fill: loop {
            for cursor in &mut cursors {
                cursor.claim(&mut table, m);
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        return Ok(table);
    }

    fill_weighted(&mut cursors, &active, &mut table, m);
    Ok(table)
}

/// Weighted-fair turns: the member with the smallest `(2k + 1) / w` claims next.
fn fill_weighted(cursors: &mut [Cursor], active: &[&Member], table: &mut [u32], m: u64) {
    let mut heap: BinaryHeap<Reverse<Turn>> = active
        .iter()
        .enumerate()
        .map(|(index, member)| {
            Reverse(Turn {
                taken: 0,
                weight: u64::from(member.weight),
                index,
            })
        })
        .collect();
    for _ in 0..m {
        let Some(Reverse(mut turn)) = heap.pop() else {
            break;
        };
        cursors[turn.index].claim(table, m);
        turn.taken += 1;
        heap.push(Reverse(turn));
    }
}

/// Number of slots whose owner differs between two tables of equal size (for tests and benches).
/// Slots present in only one table count as changed.
pub fn changed_slots(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// A member's position in its preference list, computed lazily: offset + j * skip (mod M).
struct Cursor {
    id: u32,
    pos: u64,
    skip: u64,
}

impl Cursor {
    fn new(member: &Member, m: u64) -> Self {
        Cursor {
            id: member.id,
            pos: hash(&member.address, OFFSET_SEED) % m,
            skip: hash(&member.address, SKIP_SEED) % (m - 1) + 1,
        }
    }

    /// Takes the member's next free preferred slot. Terminates: a slot is free and the
    /// preferences visit every slot (M prime).
    fn claim(&mut self, table: &mut [u32], m: u64) {
        while table[self.pos as usize] != 0 {
            self.advance(m);
        }
        table[self.pos as usize] = self.id;
        self.advance(m);
    }

    /// Next preference: `pos + skip (mod m)`, with `pos, skip < m`.
    fn advance(&mut self, m: u64) {
        self.pos += self.skip;
        if self.pos >= m {
            self.pos -= m;
        }
    }
}

/// A member's claim to the next turn, ordered by virtual time `(2 * taken + 1) / weight`.
#[derive(PartialEq, Eq)]
struct Turn {
    taken: u64,
    weight: u64,
    index: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        let lhs = u128::from(2 * self.taken + 1) * u128::from(other.weight);
        let rhs = u128::from(2 * other.taken + 1) * u128::from(self.weight);
        lhs.cmp(&rhs).then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Seeded 64-bit FNV-1a over a family tag and the address octets, then murmur3's fmix64 so that
/// nearby addresses spread over the whole range. Fixed forever: changing it reshuffles fleets.
fn hash(address: &IpAddr, seed: u64) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    // The tag keeps 1.2.3.4 and ::ffff:1.2.3.4 apart.
    let (tag, octets) = match address {
        IpAddr::V4(v4) => (4u8, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6u8, v6.octets()),
    };
    for byte in std::iter::once(tag).chain(octets) {
        h = (h ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_fast_path_matches_the_weighted_order() {
        let members: Vec<Member> = (1..=37u8)
            .map(|i| Member {
                id: u32::from(i),
                address: IpAddr::V4(Ipv4Addr::new(10, 1, i, 7)),
                weight: 3,
            })
            .collect();
        let fast = build(&members, DEFAULT_SIZE).expect("table");
        let m = u64::from(DEFAULT_SIZE);
        let mut sorted: Vec<&Member> = members.iter().collect();
        sorted.sort_unstable_by_key(|member| member.address);
        let mut cursors: Vec<Cursor> = sorted.iter().map(|member| Cursor::new(member, m)).collect();
        let mut slow = vec![0u32; DEFAULT_SIZE as usize];
        fill_weighted(&mut cursors, &sorted, &mut slow, m);
        assert_eq!(
            fast, slow,
            "round robin is the weighted order with equal weights"
        );
    }
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const M: u32 = DEFAULT_SIZE;

    fn members(addresses: &[IpAddr]) -> Vec<Member> {
        let ids = 1u32..;
        ids.zip(addresses)
            .map(|(id, &address)| Member {
                id,
                address,
                weight: 1,
            })
            .collect()
    }

    fn v4_range(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + i)))
            .collect()
    }

    fn shares(table: &[u32], members: &[Member]) -> Vec<usize> {
        members
            .iter()
            .map(|m| table.iter().filter(|&&s| s == m.id).count())
            .collect()
    }

    fn build_ok(members: &[Member]) -> Vec<u32> {
        build(members, M).unwrap_or_else(|e| panic!("build failed for {members:?}: {e}"))
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    fn addresses(max: usize) -> impl Strategy<Value = Vec<IpAddr>> {
        prop::collection::btree_set(address(), 2..=max).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn equal_weights_share_evenly(addrs in addresses(50)) {
            let ms = members(&addrs);
            let table = build_ok(&ms);
            let ideal = f64::from(M) / ms.len() as f64;
            for (m, share) in ms.iter().zip(shares(&table, &ms)) {
                let off = (share as f64 - ideal).abs() / ideal;
                prop_assert!(off <= 0.01, "{m:?} has {share} slots, ideal {ideal:.1}");
            }
            prop_assert!(table.iter().all(|&s| s != 0), "unfilled slot with {} members", ms.len());
        }

        #[test]
        fn removal_moves_about_one_nth(addrs in addresses(50), pick in any::<prop::sample::Index>()) {
            let ms = members(&addrs);
            // Equal skips (odds 1/65536 per pair) are the documented weakness, excluded here.
            let mut skips: Vec<u64> = ms.iter().map(|m| Cursor::new(m, M.into()).skip).collect();
            skips.sort_unstable();
            prop_assume!(skips.windows(2).all(|w| w[0] != w[1]));
            let mut rest = ms.clone();
            let removed = rest.remove(pick.index(ms.len()));
            let (before, after) = (build_ok(&ms), build_ok(&rest));
            // Margin: 100k random trials at N <= 10 moved at most 3.9% beyond 1/N.
            let bound = (1.0 / ms.len() as f64 + 0.05) * f64::from(M);
            let changed = changed_slots(&before, &after);
            prop_assert!((changed as f64) <= bound, "{changed} slots moved, bound {bound:.0}, N={}", ms.len());
            prop_assert!(after.iter().all(|&s| s != removed.id), "{removed:?} still owns slots");
        }

        #[test]
        fn input_order_does_not_matter(
            (ms, shuffled) in addresses(50).prop_flat_map(|addrs| {
                let weights = prop::collection::vec(0u32..5, addrs.len());
                weights.prop_flat_map(move |ws| {
                    let ms: Vec<Member> = members(&addrs).into_iter().zip(ws)
                        .map(|(m, weight)| Member { weight, ..m }).collect();
                    (Just(ms.clone()), Just(ms).prop_shuffle())
                })
            })
        ) {
            prop_assert_eq!(build_ok(&ms), build_ok(&shuffled));
        }
    }

    #[test]
    fn removal_of_one_in_a_hundred_disrupts_little() {
        let ms = members(&v4_range(100));
        let before = build_ok(&ms);
        let worst = (0..ms.len())
            .map(|gone| {
                let mut rest = ms.clone();
                let removed = rest.remove(gone);
                let after = build_ok(&rest);
                // Slots that changed owner, other than those the removed member owned.
                let moved = before.iter().zip(&after).filter(|&(b, a)| a != b);
                moved.filter(|&(b, _)| *b != removed.id).count()
            })
            .max()
            .unwrap_or(0);
        let pct = 100.0 * worst as f64 / f64::from(M);
        assert!(
            pct < 1.5,
            "worst extra disruption {worst} slots ({pct:.2}% of M)"
        );
    }

    #[test]
    fn weights_shift_shares_proportionally() {
        let mut ms = members(&v4_range(3));
        for (m, w) in ms.iter_mut().zip([1, 2, 3]) {
            m.weight = w;
        }
        let got = shares(&build_ok(&ms), &ms);
        for (share, w) in got.iter().zip([1.0, 2.0, 3.0]) {
            let off = (*share as f64 / f64::from(M) - w / 6.0).abs();
            assert!(off < 0.01, "shares {got:?} not ~1:2:3");
        }
    }

    #[test]
    fn drained_members_get_no_slots() {
        let mut ms = members(&v4_range(4));
        ms[1].weight = 0;
        let table = build_ok(&ms);
        assert!(
            table.iter().all(|&s| s != ms[1].id && s != 0),
            "drained member or hole in table"
        );
        for m in &mut ms {
            m.weight = 0;
        }
        assert!(
            build_ok(&ms).iter().all(|&s| s == 0),
            "all drained must give an all-zero table"
        );
        assert!(
            build_ok(&[]).iter().all(|&s| s == 0),
            "no members must give an all-zero table"
        );
    }

    #[test]
    fn invalid_input_is_rejected() {
        let mut ms = members(&v4_range(3));
        assert_eq!(build(&ms, 65_536), Err(MaglevError::NotPrime(65_536)));
        assert_eq!(
            build(&ms, 3),
            Err(MaglevError::TooSmall {
                size: 3,
                members: 3
            })
        );
        assert_eq!(build(&ms, 5).map(|t| t.len()), Ok(5));
        ms[2].address = ms[0].address;
        assert_eq!(build(&ms, M), Err(MaglevError::Duplicate(ms[0].address)));
        ms[2].address = "::1".parse().unwrap_or_else(|e| panic!("{e}"));
        ms[1].id = 0;
        assert_eq!(build(&ms, M), Err(MaglevError::ZeroId));
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..50).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            small,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
        );
        assert!(is_prime(65_537) && is_prime(4_294_967_291), "known primes");
        assert!(
            !is_prime(65_535) && !is_prime(25) && !is_prime(4_294_967_295),
            "composites"
        );
    }

    #[test]
    fn changed_slots_counts_differences() {
        assert_eq!(changed_slots(&[1, 2, 3], &[1, 5, 3]), 1);
        assert_eq!(changed_slots(&[1, 2], &[1, 2, 3]), 1);
    }
}
