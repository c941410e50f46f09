//! One token's budget on this replica for one wall-clock minute: pure bookkeeping, no I/O, no
//! clock. `RateLimiter` feeds it the window and applies the leases it asks for.
//!
//! A replica may admit what the database confirmed to it (`confirmed`) plus a credit (one
//! lease, at least `MIN_CREDIT` or the whole limit if smaller), so the first request of a
//! window and a request that arrives while a refill is in flight never wait for the database.
//! What was admitted on credit is paid for by the next lease (it asks for the debt plus one
//! lease). When a lease comes back short, the window is exhausted for this replica and the
//! credit ends.

/// The least credit a replica runs ahead of its leases: small limits would otherwise refuse a
/// second request that arrives while the first lease is in flight.
pub const MIN_CREDIT: u32 = 10;

/// Budget to ask the shared counter for: `amount` of `window` under `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub window: i64,
    pub amount: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; start `lease` (in the background) when there is one.
    Admit(Option<Lease>),
    /// Refused. `lease` as above (after a raised limit, there may be room again). `waiting`:
    /// only the credit is spent and a lease is on its way (an early refusal; retry soon).
    /// `first` is true the first time in a window the limit itself is reached (for the limited
    /// hook; early refusals do not count).
    Limited {
        first: bool,
        lease: Option<Lease>,
        waiting: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Budget {
    window: i64,
    /// Requests the shared counter granted to this replica in this window.
    confirmed: u64,
    /// Requests this replica admitted in this window.
    spent: u64,
    /// A lease is in flight.
    leasing: bool,
    /// The counter could not give a full lease at this limit: no more leases in this window
    /// unless the limit is raised.
    exhausted_at: Option<u32>,
    /// A lease failed (database unreachable): this replica enforces the limit alone until the
    /// window ends.
    local_only: bool,
    /// The limited hook has fired in this window.
    reported: bool,
}

impl Budget {
    pub fn new(window: i64) -> Self {
        Self {
            window,
            confirmed: 0,
            spent: 0,
            leasing: false,
            exhausted_at: None,
            local_only: false,
            reported: false,
        }
    }

    pub fn window(&self) -> i64 {
        self.window
    }

    /// One request in `window` for a token limited to `limit` per minute, leasing `lease_size`
    /// at a time.
    pub fn admit(&mut self, window: i64, limit: u32, lease_size: u32) -> Admission {
        if window != self.window {
            *self = Self::new(window);
        }
        if self.exhausted_at.is_some_and(|at| limit > at) {
            // The limit was raised: the counter may have room again.
            self.exhausted_at = None;
        }
        let limit_u64 = u64::from(limit);
        let ceiling = if self.local_only {
            limit_u64
        } else {
            let credit = if self.exhausted_at.is_some() {
                0
            } else {
                u64::from(lease_size.max(MIN_CREDIT.min(limit)))
            };
            // One replica never admits more than the whole limit, whatever it holds (a
            // lowered limit takes effect at once).
            (self.confirmed + credit).min(limit_u64)
        };
        if self.spent >= ceiling {
            let waiting = self.leasing && self.spent < limit_u64;
            let first = !waiting && !self.reported;
            if !waiting {
                self.reported = true;
            }
            return Admission::Limited {
                first,
                lease: self.next_lease(limit, lease_size),
                waiting,
            };
        }
        self.spent += 1;
        Admission::Admit(self.next_lease(limit, lease_size))
    }

    /// A lease when fewer than half a lease of confirmed budget is left unspent, so the refill
    /// lands before the credit runs out. It asks for what was spent on credit plus one lease.
    fn next_lease(&mut self, limit: u32, lease_size: u32) -> Option<Lease> {
        if self.leasing || self.local_only || self.exhausted_at.is_some() {
            return None;
        }
        let unspent = self.confirmed.saturating_sub(self.spent);
        if unspent >= u64::from(lease_size.div_ceil(2)) {
            return None;
        }
        let debt = self.spent.saturating_sub(self.confirmed);
        let amount = (debt + u64::from(lease_size)).min(u64::from(limit));
        self.leasing = true;
        Some(Lease {
            window: self.window,
            amount: u32::try_from(amount).unwrap_or(limit),
            limit,
        })
    }

    /// The counter granted `granted` of `lease` (less than asked: the window is used up).
    /// Returns the next lease when requests admitted meanwhile already need one.
    pub fn leased(&mut self, lease: Lease, granted: u32, lease_size: u32) -> Option<Lease> {
        if lease.window != self.window {
            return None;
        }
        self.leasing = false;
        self.confirmed += u64::from(granted);
        if granted < lease.amount {
            self.exhausted_at = Some(lease.limit);
        }
        self.next_lease(lease.limit, lease_size)
    }

    /// The counter could not be reached: fall back to enforcing the limit on this replica
    /// alone for the rest of the window.
    pub fn lease_failed(&mut self, lease: Lease) {
        if lease.window != self.window {
            return;
        }
        self.leasing = false;
        self.local_only = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> Option<Lease> {
        match admission {
            Admission::Admit(lease) => lease,
            Admission::Limited { .. } => panic!("expected admission, got {admission:?}"),
        }
    }

    /// A refusal at the limit: whether it is the first in its window.
    fn limited(admission: Admission) -> bool {
        match admission {
            Admission::Limited {
                first,
                waiting: false,
                ..
            } => first,
            _ => panic!("expected a refusal at the limit, got {admission:?}"),
        }
    }

    /// A refusal while a lease is on its way.
    fn early(admission: Admission) -> bool {
        matches!(
            admission,
            Admission::Limited {
                first: false,
                waiting: true,
                ..
            }
        )
    }

    #[test]
    fn first_request_is_admitted_on_credit_and_starts_a_lease() {
        let mut budget = Budget::new(7);
        let lease = admitted(budget.admit(7, 600, 15)).unwrap();
        // The request just admitted on credit, plus one lease.
        assert_eq!(
            lease,
            Lease {
                window: 7,
                amount: 16,
                limit: 600
            }
        );
        // Credit covers one lease while it is in flight; no second lease meanwhile.
        for _ in 1..15 {
            assert_eq!(admitted(budget.admit(7, 600, 15)), None);
        }
        // Refused early: the limit is far, but the credit is spent until the lease lands.
        assert!(early(budget.admit(7, 600, 15)));
        assert!(early(budget.admit(7, 600, 15)));
        // Confirmed 16, spent 15: the next lease starts at once and asks for one lease.
        let next = budget.leased(lease, 16, 15).unwrap();
        assert_eq!(next.amount, 15);
        // The credit is back: requests pass while it is in flight.
        assert_eq!(admitted(budget.admit(7, 600, 15)), None);
    }

    #[test]
    fn what_was_admitted_on_credit_is_leased_afterwards() {
        let mut budget = Budget::new(0);
        let lease = admitted(budget.admit(0, 100, 3)).unwrap();
        // Credit is MIN_CREDIT here (more than a lease of 3).
        for _ in 1..MIN_CREDIT {
            assert_eq!(admitted(budget.admit(0, 100, 3)), None);
        }
        assert!(early(budget.admit(0, 100, 3)));
        // 10 spent, 4 confirmed: the follow-up asks for the debt of 6 plus a lease.
        assert_eq!(lease.amount, 4);
        let next = budget.leased(lease, 4, 3).unwrap();
        assert_eq!(next.amount, 9);
        assert_eq!(budget.leased(next, 9, 3), None, "13 confirmed, 10 spent");
    }

    #[test]
    fn refills_start_at_half_a_lease_left() {
        let mut budget = Budget::new(0);
        let lease = admitted(budget.admit(0, 400, 10)).unwrap();
        assert_eq!(budget.leased(lease, 11, 10), None);
        // spent 1, confirmed 11: 10 unspent, no lease until fewer than 5 are left.
        for _ in 0..5 {
            assert_eq!(admitted(budget.admit(0, 400, 10)), None);
        }
        assert!(admitted(budget.admit(0, 400, 10)).is_some(), "spent 7");
    }

    #[test]
    fn a_short_lease_exhausts_the_window_and_ends_the_credit() {
        let mut budget = Budget::new(0);
        let lease = admitted(budget.admit(0, 40, 4)).unwrap();
        assert_eq!(
            budget.leased(lease, 2, 4),
            None,
            "exhausted: no more leases"
        );
        admitted(budget.admit(0, 40, 4));
        assert!(limited(budget.admit(0, 40, 4)), "first at the limit");
        assert!(!limited(budget.admit(0, 40, 4)), "reported once");
        // A raised limit reopens leasing.
        match budget.admit(0, 80, 4) {
            Admission::Admit(Some(lease)) => assert_eq!(lease.limit, 80),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_limits_are_whole_credit_and_a_new_window_starts_from_nothing() {
        let mut budget = Budget::new(0);
        let lease = admitted(budget.admit(0, 2, 1)).unwrap();
        assert_eq!(admitted(budget.admit(0, 2, 1)), None);
        assert!(limited(budget.admit(0, 2, 1)), "never more than the limit");
        // A lease answered after its window ended changes nothing.
        let next = admitted(budget.admit(1, 2, 1)).unwrap();
        assert_eq!(budget.leased(lease, 0, 1), None);
        assert_eq!(next.window, 1);
        admitted(budget.admit(1, 2, 1));
        assert!(
            limited(budget.admit(1, 2, 1)),
            "reported again in a new window"
        );
    }

    #[test]
    fn an_unreachable_counter_leaves_the_limit_to_this_replica() {
        let mut budget = Budget::new(3);
        let lease = admitted(budget.admit(3, 50, 2)).unwrap();
        budget.lease_failed(lease);
        for _ in 1..50 {
            assert_eq!(admitted(budget.admit(3, 50, 2)), None);
        }
        assert!(limited(budget.admit(3, 50, 2)));
    }

    #[test]
    fn a_lowered_limit_caps_what_was_already_leased() {
        let mut budget = Budget::new(0);
        let lease = admitted(budget.admit(0, 1000, 25)).unwrap();
        assert_eq!(budget.leased(lease, 26, 25), None);
        for _ in 1..3 {
            admitted(budget.admit(0, 1000, 25));
        }
        assert!(limited(budget.admit(0, 3, 1)));
    }
}
