//! Which stored releases to keep. Releases that were active are what a rollback needs, so
//! `keep_releases` counts those; releases that never went live (failed, refused, rolled back)
//! go first. Never removed: the active release, the last good one before it, whatever is
//! serving, and the release of the latest deploy (its logs explain how it ended).

use crate::release::ReleaseId;
use crate::store::ReleaseRecord;

/// A release as retention sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: ReleaseId,
    pub stored_at: i64,
    pub last_active_at: Option<i64>,
}

impl From<&ReleaseRecord> for Candidate {
    fn from(record: &ReleaseRecord) -> Self {
        Candidate {
            id: record.release.id.clone(),
            stored_at: record.release.stored_at,
            last_active_at: record.last_active_at,
        }
    }
}

/// The releases to remove, oldest first. `protected` are never removed; `keep` is the
/// component's `keep_releases`.
pub fn to_prune(releases: &[Candidate], protected: &[&ReleaseId], keep: usize) -> Vec<ReleaseId> {
    let mut were_active: Vec<&Candidate> = releases
        .iter()
        .filter(|r| r.last_active_at.is_some())
        .collect();
    were_active.sort_by_key(|r| std::cmp::Reverse((r.last_active_at, r.stored_at)));
    let mut never_active: Vec<&Candidate> = releases
        .iter()
        .filter(|r| r.last_active_at.is_none())
        .collect();
    never_active.sort_by_key(|r| std::cmp::Reverse(r.stored_at));

    // The active release and the last good one before it stay whatever `keep` says.
    let active_kept = keep.max(2);
    let room_for_others = keep.saturating_sub(were_active.len().min(active_kept));
    let doomed = were_active
        .iter()
        .skip(active_kept)
        .chain(never_active.iter().skip(room_for_others))
        .filter(|r| !protected.contains(&&r.id));
    let mut doomed: Vec<&Candidate> = doomed.copied().collect();
    doomed.sort_by_key(|r| r.stored_at);
    doomed.into_iter().map(|r| r.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    /// `(id, stored_at, last_active_at)` rows.
    fn releases(rows: &[(&str, i64, Option<i64>)]) -> Vec<Candidate> {
        rows.iter()
            .map(|(name, stored, active)| Candidate {
                id: id(name),
                stored_at: *stored,
                last_active_at: *active,
            })
            .collect()
    }

    fn names(ids: Vec<ReleaseId>) -> Vec<String> {
        ids.into_iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn failed_releases_go_before_good_ones() {
        // v1, v2 went live; v3..v6 failed; v7 is now active.
        let all = releases(&[
            ("v1", 1, Some(1)),
            ("v2", 2, Some(2)),
            ("v3", 3, None),
            ("v4", 4, None),
            ("v5", 5, None),
            ("v6", 6, None),
            ("v7", 7, Some(7)),
        ]);
        let v7 = id("v7");
        assert_eq!(names(to_prune(&all, &[&v7], 5)), ["v3", "v4"]);
        assert_eq!(names(to_prune(&all, &[&v7], 3)), ["v3", "v4", "v5", "v6"]);
        // The last good release before the active one survives even keep_releases = 1.
        assert_eq!(
            names(to_prune(&all, &[&v7], 1)),
            ["v1", "v3", "v4", "v5", "v6"]
        );
    }

    #[test]
    fn keep_counts_releases_that_were_active() {
        let all = releases(&[
            ("r1", 1, Some(1)),
            ("r2", 2, Some(2)),
            ("r3", 3, Some(3)),
            ("r4", 4, Some(4)),
        ]);
        assert_eq!(names(to_prune(&all, &[], 2)), ["r1", "r2"]);
        assert!(to_prune(&all, &[], 5).is_empty());
    }

    #[test]
    fn a_rollback_makes_an_old_release_recent() {
        // r1 was re-activated by a rollback after r3: r2 is now the oldest activation.
        let all = releases(&[("r1", 1, Some(9)), ("r2", 2, Some(2)), ("r3", 3, Some(3))]);
        assert_eq!(names(to_prune(&all, &[], 2)), ["r2"]);
    }

    #[test]
    fn protected_releases_stay() {
        let all = releases(&[
            ("a", 1, Some(1)),
            ("b", 2, Some(2)),
            ("c", 3, Some(3)),
            ("x", 4, None),
        ]);
        let (a, x) = (id("a"), id("x"));
        assert!(to_prune(&all, &[&a, &x], 2).is_empty());
        assert_eq!(names(to_prune(&all, &[&x], 2)), ["a"]);
    }
}
