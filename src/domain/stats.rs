//! Dashboard statistics (SPEC §5 `GET /api/stats`): the windows, the per-minute rollup of audit
//! entries that the audit writer stores beside the rows, and what the page draws, assembled
//! from summed rollups. Pure: the store sums, this module estimates and shapes.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::Timestamp;
use super::accounts::{AccountStatus, ConnectedAccount};
use super::audit::{AuditEntry, Interface};

/// Upper bounds (inclusive, ms) of the latency histogram, then one open bucket. The same
/// bounds as the Prometheus histograms from 1 ms up, and as the `latency_le_*` columns of
/// `audit_rollups` (migration `m20261201_000009`).
pub const LATENCY_BOUNDS_MS: [u64; 15] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// How many top tokens the stats name.
pub const TOP_TOKENS: u64 = 10;

/// The histogram bucket of a duration.
pub fn latency_bucket(duration_ms: u64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| bound < duration_ms)
}

/// Minutes since the Unix epoch: the rollups' time key.
pub fn epoch_minute(at: Timestamp) -> i64 {
    at.timestamp().div_euclid(60)
}

fn minute_start(minute: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(minute.saturating_mul(60), 0).unwrap_or_default()
}

/// A status code's class: its hundreds digit, 0 for anything outside 100–599.
pub fn status_class(status_code: u16) -> u8 {
    match status_code {
        100..=599 => (status_code / 100) as u8,
        _ => 0,
    }
}

/// The key of one request rollup row: a target's minute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RollupKey {
    pub minute: i64,
    pub target_slug: String,
}

/// Sums over the requests of one key (or, once summed by the store, of many).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupCounts {
    pub status: StatusCounts,
    /// How many of them came through MCP (the rest through `/gateway`).
    pub mcp: u64,
    pub duration_ms_sum: u64,
    pub upstream_ms_sum: u64,
    pub latency: [u64; LATENCY_BUCKETS],
}

impl RollupCounts {
    pub fn requests(&self) -> u64 {
        self.status.total()
    }

    fn add(&mut self, entry: &AuditEntry) {
        self.status.add(status_class(entry.status_code), 1);
        if entry.interface == Interface::Mcp {
            self.mcp += 1;
        }
        self.duration_ms_sum = self.duration_ms_sum.saturating_add(entry.duration_ms);
        self.upstream_ms_sum = self
            .upstream_ms_sum
            .saturating_add(entry.upstream_ms.unwrap_or(0));
        self.latency[latency_bucket(entry.duration_ms)] += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        self.status.merge(&other.status);
        self.mcp += other.mcp;
        self.duration_ms_sum = self.duration_ms_sum.saturating_add(other.duration_ms_sum);
        self.upstream_ms_sum = self.upstream_ms_sum.saturating_add(other.upstream_ms_sum);
        for (sum, count) in self.latency.iter_mut().zip(other.latency) {
            *sum += count;
        }
    }

    /// The `q` quantile (0–1) of the durations, interpolated inside its bucket; `None` without
    /// requests. Requests in the open bucket count as its lower bound.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (bucket, &count) in self.latency.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let lower = bucket
                    .checked_sub(1)
                    .map_or(0.0, |b| LATENCY_BOUNDS_MS[b] as f64);
                let Some(&upper) = LATENCY_BOUNDS_MS.get(bucket) else {
                    return Some(lower);
                };
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(lower + within * (upper as f64 - lower));
            }
            below += count;
        }
        None
    }
}

/// What one audit batch adds to the rollups. Ordered maps: every replica upserts keys in the
/// same order, so two writers' transactions cannot deadlock on PostgreSQL.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchRollup {
    pub requests: BTreeMap<RollupKey, RollupCounts>,
    /// `(minute, token id)` → (the token's name, requests).
    pub tokens: BTreeMap<(i64, Uuid), (String, u64)>,
}

impl BatchRollup {
    pub fn of(entries: &[AuditEntry]) -> Self {
        let mut rollup = Self::default();
        for entry in entries {
            let minute = epoch_minute(entry.created_at);
            let key = RollupKey {
                minute,
                target_slug: entry.target_slug.clone(),
            };
            rollup.requests.entry(key).or_default().add(entry);
            if let Some(token_id) = entry.token_id {
                let (name, requests) = rollup
                    .tokens
                    .entry((minute, token_id))
                    .or_insert_with(|| (entry.token_name.clone(), 0));
                name.clone_from(&entry.token_name);
                *requests += 1;
            }
        }
        rollup
    }
}

/// Counters with no audit row behind them, kept per minute in `stat_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Label `{provider}:{outcome}`; outcomes as the metric's (success, invalid_grant, transient).
    TokenRefresh,
    /// Audit events the proxy dropped because the writer's queue was full (label empty).
    AuditDropped,
}

impl Counter {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TokenRefresh => "token_refresh",
            Self::AuditDropped => "audit_dropped",
        }
    }
}

/// The dashboard's windows: the last hour, day or week, in time buckets of 1 minute, 15 minutes
/// and 2 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsWindow {
    Hour,
    Day,
    Week,
}

impl StatsWindow {
    pub const ALL: [Self; 3] = [Self::Hour, Self::Day, Self::Week];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1h" => Some(Self::Hour),
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    const fn step_minutes(self) -> i64 {
        match self {
            Self::Hour => 1,
            Self::Day => 15,
            Self::Week => 120,
        }
    }

    const fn buckets(self) -> i64 {
        match self {
            Self::Hour => 60,
            Self::Day => 96,
            Self::Week => 84,
        }
    }

    /// The buckets that end with the one holding `now`, aligned to whole steps since the epoch
    /// (so bucket edges are round times and every replica draws the same ones).
    pub fn range(self, now: Timestamp) -> WindowRange {
        let step = self.step_minutes();
        let end_minute = (epoch_minute(now).div_euclid(step) + 1) * step;
        WindowRange {
            start_minute: end_minute - self.buckets() * step,
            end_minute,
            step_minutes: step,
        }
    }
}

/// Minutes `[start_minute, end_minute)` in buckets of `step_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRange {
    pub start_minute: i64,
    pub end_minute: i64,
    pub step_minutes: i64,
}

impl WindowRange {
    pub fn bucket_count(&self) -> usize {
        usize::try_from((self.end_minute - self.start_minute) / self.step_minutes).unwrap_or(0)
    }
}

/// Sums the store read for one window, before estimates.
#[derive(Debug, Default)]
pub struct WindowSums {
    /// Requests by status class per bucket index.
    pub series: Vec<(i64, StatusCounts)>,
    /// Per target slug.
    pub targets: Vec<(String, RollupCounts)>,
    /// The most active tokens, most requests first.
    pub top_tokens: Vec<TokenUsage>,
    /// `(counter, label)` → value.
    pub counters: Vec<(String, String, u64)>,
}

/// Requests by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub success: u64,
    pub redirect: u64,
    pub client_error: u64,
    pub server_error: u64,
    /// Anything outside 2xx–5xx.
    pub other: u64,
}

impl StatusCounts {
    pub fn merge(&mut self, other: &Self) {
        self.success += other.success;
        self.redirect += other.redirect;
        self.client_error += other.client_error;
        self.server_error += other.server_error;
        self.other += other.other;
    }

    fn add(&mut self, class: u8, requests: u64) {
        let slot = match class {
            2 => &mut self.success,
            3 => &mut self.redirect,
            4 => &mut self.client_error,
            5 => &mut self.server_error,
            _ => &mut self.other,
        };
        *slot += requests;
    }

    pub fn total(&self) -> u64 {
        self.success + self.redirect + self.client_error + self.server_error + self.other
    }
}

/// One time bucket of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    pub start: Timestamp,
    pub status: StatusCounts,
}

/// Requests per interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounts {
    pub gateway: u64,
    pub mcp: u64,
}

/// Traffic of one target (or of all, for the totals).
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficStats {
    pub target_slug: String,
    pub requests: u64,
    pub status: StatusCounts,
    /// 5xx answers over all answers: what failed on the gateway's or the upstream's side
    /// (4xx are mostly the agent's own mistakes and are shown apart).
    pub error_ratio: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Time spent waiting on the upstream over the whole request time (0–1).
    pub upstream_share: Option<f64>,
    pub interfaces: InterfaceCounts,
}

impl TrafficStats {
    fn from_sums(target_slug: String, counts: &RollupCounts) -> Self {
        let requests = counts.requests();
        Self {
            target_slug,
            requests,
            status: counts.status,
            error_ratio: ratio(counts.status.server_error, requests).unwrap_or(0.0),
            p50_ms: counts.quantile_ms(0.5),
            p95_ms: counts.quantile_ms(0.95),
            upstream_share: ratio(counts.upstream_ms_sum, counts.duration_ms_sum)
                .map(|share| share.min(1.0)),
            interfaces: InterfaceCounts {
                gateway: requests.saturating_sub(counts.mcp),
                mcp: counts.mcp,
            },
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUsage {
    pub token_id: Uuid,
    pub name: String,
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshCount {
    pub provider: String,
    pub outcome: String,
    pub count: u64,
}

/// A connected account a person has to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAttention {
    pub id: Uuid,
    pub provider: String,
    pub email: String,
    pub status: AccountStatus,
    /// Why: the status message, or the last refresh error of a still-connected account.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountSummary {
    pub connected: u64,
    pub disconnected: u64,
    pub error: u64,
    /// Disconnected or in error (re-consent or an app fix needed), then connected accounts
    /// whose last refresh failed.
    pub needs_attention: Vec<AccountAttention>,
}

impl AccountSummary {
    pub fn of(accounts: &[ConnectedAccount]) -> Self {
        let mut summary = Self::default();
        let mut failing = Vec::new();
        for account in accounts {
            let attention = |problem: Option<&String>| AccountAttention {
                id: account.id,
                provider: account.provider_type.clone(),
                email: account.email.clone(),
                status: account.status,
                problem: problem.cloned(),
            };
            match account.status {
                AccountStatus::Connected => {
                    summary.connected += 1;
                    if account.last_refresh_error.is_some() {
                        failing.push(attention(account.last_refresh_error.as_ref()));
                    }
                }
                AccountStatus::Disconnected => {
                    summary.disconnected += 1;
                    summary
                        .needs_attention
                        .push(attention(account.status_message.as_ref()));
                }
                AccountStatus::Error => {
                    summary.error += 1;
                    summary
                        .needs_attention
                        .push(attention(account.status_message.as_ref()));
                }
            }
        }
        summary.needs_attention.extend(failing);
        summary
    }
}

/// Everything the overview page draws for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub window: StatsWindow,
    pub from: Timestamp,
    pub to: Timestamp,
    pub bucket_seconds: i64,
    pub series: Vec<SeriesPoint>,
    pub totals: TrafficStats,
    /// Most requests first.
    pub targets: Vec<TrafficStats>,
    pub top_tokens: Vec<TokenUsage>,
    pub token_refresh: Vec<RefreshCount>,
    pub accounts: AccountSummary,
    pub audit_dropped: u64,
}

impl Stats {
    pub fn assemble(
        window: StatsWindow,
        range: WindowRange,
        sums: WindowSums,
        accounts: AccountSummary,
    ) -> Self {
        let mut series: Vec<SeriesPoint> = (0..range.bucket_count())
            .map(|bucket| SeriesPoint {
                start: minute_start(range.start_minute + bucket as i64 * range.step_minutes),
                status: StatusCounts::default(),
            })
            .collect();
        for (bucket, status) in &sums.series {
            if let Some(point) = usize::try_from(*bucket)
                .ok()
                .and_then(|b| series.get_mut(b))
            {
                point.status.merge(status);
            }
        }

        let mut all = RollupCounts::default();
        let mut targets: Vec<TrafficStats> = sums
            .targets
            .iter()
            .map(|(slug, counts)| {
                all.merge(counts);
                TrafficStats::from_sums(slug.clone(), counts)
            })
            .collect();
        targets.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.target_slug.cmp(&b.target_slug))
        });

        let mut token_refresh = Vec::new();
        let mut audit_dropped = 0;
        for (name, label, value) in sums.counters {
            if name == Counter::TokenRefresh.as_str() {
                let (provider, outcome) = label.split_once(':').unwrap_or((label.as_str(), ""));
                token_refresh.push(RefreshCount {
                    provider: provider.to_owned(),
                    outcome: outcome.to_owned(),
                    count: value,
                });
            } else if name == Counter::AuditDropped.as_str() {
                audit_dropped += value;
            }
        }
        token_refresh.sort_by(|a, b| (&a.provider, &a.outcome).cmp(&(&b.provider, &b.outcome)));

        Self {
            window,
            from: minute_start(range.start_minute),
            to: minute_start(range.end_minute),
            bucket_seconds: range.step_minutes * 60,
            series,
            totals: TrafficStats::from_sums("*".to_owned(), &all),
            targets,
            top_tokens: sums.top_tokens,
            token_refresh,
            accounts,
            audit_dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(h: u32, m: u32, s: u32) -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 1, h, m, s)
            .single()
            .unwrap()
    }

    fn entry(slug: &str, status: u16, ms: u64, when: Timestamp) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            token_id: Some(Uuid::from_u128(7)),
            token_name: "agent".into(),
            target_id: None,
            target_slug: slug.into(),
            method: "GET".into(),
            path: "/".into(),
            status_code: status,
            client_ip: "127.0.0.1".into(),
            duration_ms: ms,
            upstream_ms: Some(ms / 2),
            error: None,
            interface: Interface::Gateway,
            guard_action: None,
            approved_by: None,
            created_at: when,
        }
    }

    #[test]
    fn latency_buckets_are_inclusive_upper_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(2), 1);
        assert_eq!(latency_bucket(3), 2);
        assert_eq!(latency_bucket(60_000), 14);
        assert_eq!(latency_bucket(60_001), 15);
        assert_eq!(latency_bucket(u64::MAX), 15);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut counts = RollupCounts::default();
        assert_eq!(counts.quantile_ms(0.5), None);
        // 100 requests in (10, 25] ms: the median is half way through it.
        counts.latency[4] = 100;
        assert_eq!(counts.quantile_ms(0.5), Some(17.5));
        // 900 fast ones below: p50 moves into [0, 1], p95 stays in (10, 25].
        counts.latency[0] = 900;
        assert_eq!(counts.quantile_ms(0.5), Some(500.0 / 900.0));
        assert_eq!(counts.quantile_ms(0.95), Some(10.0 + 0.5 * 15.0));
        // The open bucket answers its lower bound.
        let mut slow = RollupCounts::default();
        slow.latency[15] = 3;
        assert_eq!(slow.quantile_ms(0.95), Some(60_000.0));
    }

    #[test]
    fn a_batch_rolls_up_per_minute_target_interface_and_class() {
        let entries = [
            entry("a", 200, 3, at(10, 0, 1)),
            entry("a", 204, 30, at(10, 0, 59)),
            entry("a", 502, 4, at(10, 0, 30)),
            entry("a", 200, 3, at(10, 1, 0)),
            entry("b", 200, 3, at(10, 0, 0)),
        ];
        let rollup = BatchRollup::of(&entries);
        let minute = epoch_minute(at(10, 0, 0));
        let key = |slug: &str, minute: i64| RollupKey {
            minute,
            target_slug: slug.into(),
        };
        let a = &rollup.requests[&key("a", minute)];
        assert_eq!(a.requests(), 3);
        assert_eq!(a.status.success, 2);
        assert_eq!(a.status.server_error, 1);
        assert_eq!(a.duration_ms_sum, 37);
        assert_eq!(a.upstream_ms_sum, 1 + 15 + 2);
        assert_eq!(a.latency[2], 2);
        assert_eq!(a.latency[5], 1);
        assert_eq!(rollup.requests[&key("a", minute + 1)].requests(), 1);
        assert_eq!(rollup.requests[&key("b", minute)].requests(), 1);
        assert_eq!(rollup.requests.len(), 3);
        assert_eq!(
            rollup.tokens[&(minute, Uuid::from_u128(7))],
            ("agent".to_owned(), 4)
        );
    }

    #[test]
    fn windows_end_with_the_bucket_holding_now() {
        let now = at(10, 7, 30);
        let hour = StatsWindow::Hour.range(now);
        assert_eq!(hour.end_minute, epoch_minute(at(10, 8, 0)));
        assert_eq!(hour.bucket_count(), 60);
        let day = StatsWindow::Day.range(now);
        assert_eq!(day.end_minute, epoch_minute(at(10, 15, 0)));
        assert_eq!(day.start_minute, day.end_minute - 24 * 60);
        assert_eq!(day.bucket_count(), 96);
        let week = StatsWindow::Week.range(now);
        assert_eq!(week.end_minute, epoch_minute(at(12, 0, 0)));
        assert_eq!(week.bucket_count(), 84);
        assert_eq!(StatsWindow::parse("24h"), Some(StatsWindow::Day));
        assert_eq!(StatsWindow::parse("2d"), None);
    }

    #[test]
    fn assembled_stats_split_targets_and_read_counters() {
        let range = StatsWindow::Hour.range(at(10, 59, 0));
        let mut fast = RollupCounts {
            duration_ms_sum: 90,
            upstream_ms_sum: 45,
            ..RollupCounts::default()
        };
        fast.status.success = 9;
        fast.latency[3] = 9;
        let mut failing = RollupCounts {
            mcp: 1,
            duration_ms_sum: 10,
            upstream_ms_sum: 0,
            ..RollupCounts::default()
        };
        failing.status.server_error = 1;
        failing.latency[3] = 1;
        let ok = |n| StatusCounts {
            success: n,
            ..StatusCounts::default()
        };
        let sums = WindowSums {
            series: vec![
                (59, ok(9)),
                (
                    59,
                    StatusCounts {
                        server_error: 1,
                        ..StatusCounts::default()
                    },
                ),
                (200, ok(1)),
            ],
            targets: vec![("a".into(), fast), ("b".into(), failing)],
            top_tokens: vec![],
            counters: vec![
                ("token_refresh".into(), "microsoft_365:success".into(), 3),
                ("audit_dropped".into(), String::new(), 2),
            ],
        };
        let stats = Stats::assemble(StatsWindow::Hour, range, sums, AccountSummary::default());
        assert_eq!(stats.series.len(), 60);
        assert_eq!(stats.series[59].status.success, 9);
        assert_eq!(stats.series[59].status.server_error, 1);
        assert_eq!(stats.series[59].start, at(10, 59, 0));
        assert_eq!(stats.totals.requests, 10);
        assert!((stats.totals.error_ratio - 0.1).abs() < 1e-9);
        assert_eq!(
            stats.totals.interfaces,
            InterfaceCounts { gateway: 9, mcp: 1 }
        );
        assert_eq!(stats.targets[0].target_slug, "a");
        assert_eq!(stats.targets[0].upstream_share, Some(0.5));
        assert_eq!(stats.targets[1].error_ratio, 1.0);
        assert_eq!(stats.token_refresh[0].outcome, "success");
        assert_eq!(stats.audit_dropped, 2);
        assert_eq!(stats.bucket_seconds, 60);
    }
}
