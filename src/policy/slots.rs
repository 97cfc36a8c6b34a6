//! How a balancing group's flows are spread over its exits. The kernel picks a
//! multipath route's next hop by the flow's hash (with `fib_multipath_hash_policy=1`:
//! addresses, protocol and ports), each next hop owning a contiguous share of the hash
//! space in proportion to its weight ("hash-threshold"). Removing one next hop from a
//! plain weighted route shifts every boundary, so flows of healthy exits would move too.
//!
//! Here the hash space is cut into [`SLOTS`] equal slots, each with a home exit
//! (contiguous blocks in proportion to the weights). The route lists the slots as next
//! hops, adjacent slots of one exit merged into one next hop weighted by their count:
//! the boundaries stay where they are whatever the exits do. A slot whose home exit is
//! out of the set goes to the exits in the set, in proportion to their weights; when
//! its home exit comes back, so does the slot. So an exit that leaves moves only its
//! own flows, and takes back only those when it returns.

/// Slots the hash space is cut into (a multiple of 2, 3, 4, 5 and 6).
pub const SLOTS: usize = 60;

/// The route's next hops for `weights` (one per exit, in list order) when the exits in
/// `members` carry flows: `(exit, weight)` in hash order, adjacent slots of one exit
/// merged. Empty when `members` is.
pub fn next_hops(weights: &[u32], members: &[usize]) -> Vec<(usize, u32)> {
    let slots = assign(weights, members);
    let mut hops: Vec<(usize, u32)> = Vec::new();
    for exit in slots.into_iter().flatten() {
        match hops.last_mut() {
            Some((e, n)) if *e == exit => *n += 1,
            _ => hops.push((exit, 1)),
        }
    }
    hops
}

/// Each slot's exit: its home exit when that is a member, else a member's by weight.
fn assign(weights: &[u32], members: &[usize]) -> [Option<usize>; SLOTS] {
    let mut slots = [None; SLOTS];
    let home = apportion(SLOTS as u32, weights);
    let mut at = 0;
    for (exit, &n) in home.iter().enumerate() {
        for slot in slots.iter_mut().skip(at).take(n as usize) {
            *slot = Some(exit);
        }
        at += n as usize;
    }
    let is_member = |e: &usize| members.contains(e);
    let orphans = slots
        .iter()
        .filter(|s| !s.as_ref().is_some_and(is_member))
        .count();
    if orphans == 0 || members.is_empty() {
        if members.is_empty() {
            slots = [None; SLOTS];
        }
        return slots;
    }
    let member_weights: Vec<u32> = members
        .iter()
        .map(|&m| weights.get(m).copied().unwrap_or(1))
        .collect();
    let shares = apportion(orphans as u32, &member_weights);
    let mut heirs = members
        .iter()
        .zip(shares)
        .flat_map(|(&m, n)| std::iter::repeat_n(m, n as usize));
    for slot in slots.iter_mut() {
        if !slot.as_ref().is_some_and(is_member) {
            *slot = heirs.next();
        }
    }
    slots
}

/// `total` split in proportion to `weights` (largest remainder; each positive weight
/// gets at least one when there are enough to go round).
fn apportion(total: u32, weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<u32> = weights
        .iter()
        .map(|&w| (u64::from(total) * u64::from(w) / sum) as u32)
        .collect();
    let mut left = total - shares.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest fractional part first, the earlier exit among equals.
    order.sort_by_key(|&i| {
        let rem = u64::from(total) * u64::from(weights[i]) % sum;
        (std::cmp::Reverse(rem), i)
    });
    for &i in order.iter().cycle().take(weights.len() * 2) {
        if left == 0 {
            break;
        }
        if weights[i] > 0 {
            shares[i] += 1;
            left -= 1;
        }
    }
    // No exit with a weight is left without a slot while another has several.
    for i in 0..weights.len() {
        if weights[i] > 0 && shares[i] == 0 {
            if let Some(j) = (0..shares.len())
                .filter(|&j| shares[j] > 1)
                .max_by_key(|&j| shares[j])
            {
                shares[j] -= 1;
                shares[i] += 1;
            }
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_give_contiguous_shares() {
        assert_eq!(
            next_hops(&[2, 1, 1], &[0, 1, 2]),
            vec![(0, 30), (1, 15), (2, 15)]
        );
        assert_eq!(
            next_hops(&[1, 1, 1], &[0, 1, 2]),
            vec![(0, 20), (1, 20), (2, 20)]
        );
        assert_eq!(
            next_hops(&[1, 1, 1, 1, 1, 1, 1], &[0, 1, 2, 3, 4, 5, 6]).len(),
            7
        );
        assert_eq!(
            apportion(60, &[1, 1, 1, 1, 1, 1, 1]).iter().sum::<u32>(),
            60
        );
        assert_eq!(apportion(60, &[100, 1]), vec![59, 1]);
    }

    #[test]
    fn an_exit_leaving_moves_only_its_own_slots() {
        for weights in [[2, 1, 1], [1, 1, 1], [1, 5, 2]] {
            for gone in 0..3 {
                let all = assign(&weights, &[0, 1, 2]);
                let members: Vec<usize> = (0..3).filter(|&e| e != gone).collect();
                let some = assign(&weights, &members);
                for (a, b) in all.iter().zip(some.iter()) {
                    if *a != Some(gone) {
                        assert_eq!(a, b, "weights {weights:?}, exit {gone} left");
                    } else {
                        assert!(b.is_some() && *b != Some(gone));
                    }
                }
                // And it takes back exactly its own slots when it returns.
                assert_eq!(assign(&weights, &[0, 1, 2]), all);
            }
        }
    }

    #[test]
    fn orphaned_slots_follow_the_remaining_weights() {
        // Exit 0 (weight 2) leaves: its 30 slots go 15/15 to the two others.
        assert_eq!(
            next_hops(&[2, 1, 1], &[1, 2]),
            vec![(1, 15), (2, 15), (1, 15), (2, 15)]
        );
        assert_eq!(next_hops(&[2, 1, 1], &[2]), vec![(2, 60)]);
        assert!(next_hops(&[2, 1, 1], &[]).is_empty());
    }
}
