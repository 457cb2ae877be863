//! Participants' withdrawals and erasures on the data path: which readings of a record are
//! stored ([`Consent::split`]) and what a batch was decided with ([`Label`]), checked again in
//! the transaction that commits it ([`crate::data::guard`]).
//!
//! The rule is [`vitalsink_common::participants::Statuses::decide`] (a reading at or after a
//! withdrawal's effective time, by the reading's own `ts`, or any reading of an erased
//! participant, is refused). A [`Consent`] is one shard's copy of the `participant_status`
//! table as the pipeline last read it; each reading is decided by the copy of the shard it is
//! routed to, the copy its writer checks at commit (`common/src/participants.rs`, the
//! protocol).
//!
//! A refused reading is not stored: its record goes to the dead-letter topic with reason
//! `withdrawn` or `erased` ([`Split::reason`]), and the record's other readings, if any, are
//! stored (a record straddling a withdrawal's effective time is split: the dead letter
//! carries the whole original record, its detail names the refused samples by index).
//! Readings at one instant share their decision, so the samples kept keep their
//! `occurrence` (schemas/README.md, "Identity").

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use vitalsink_common::measurement::Sample;
use vitalsink_common::participants::{self, Change, Status, Statuses};

/// One shard's `participant_status` table, ready to decide readings and to be compared with
/// another version of it.
#[derive(Debug, Clone, Default)]
pub struct Consent {
    statuses: Statuses,
    /// Every change by `seq`: (participant, status, effective_at µs since the epoch, UTC).
    changes: BTreeMap<i64, (String, Status, i64)>,
    /// Participants with at least one change; every reading of anyone else is stored.
    touched: HashSet<String>,
}

impl Consent {
    /// From the table's rows, any order.
    pub fn from_changes(changes: &[Change]) -> Self {
        Self {
            statuses: Statuses::from_changes(changes),
            changes: changes
                .iter()
                .map(|c| {
                    (
                        c.seq,
                        (
                            c.participant_id.clone(),
                            c.status,
                            c.effective_at.timestamp_micros(),
                        ),
                    )
                })
                .collect(),
            touched: changes.iter().map(|c| c.participant_id.clone()).collect(),
        }
    }

    /// Reads the whole table with `client` (in the writer: inside the transaction that
    /// commits, after the shared lock).
    ///
    /// # Errors
    /// The driver's error (the caller names the shard).
    pub async fn load(
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<Self, tokio_postgres::Error> {
        Ok(Self::from_changes(&participants::changes(client).await?))
    }

    /// The table's version: its highest `seq` (0: no change recorded).
    pub fn version(&self) -> i64 {
        self.statuses.version()
    }

    /// Which of `samples`, the readings of one record of `participant`, are refused; `None`
    /// when every one is stored (the common case: one hash lookup, no allocation).
    pub fn split(&self, participant: &str, samples: &[Sample]) -> Option<Split> {
        if !self.touched.contains(participant) {
            return None;
        }
        let mut refused = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            match self.statuses.decide(participant, s.ts_micros) {
                Status::Active => {}
                st => refused.push((i, st)),
            }
        }
        if refused.is_empty() {
            return None;
        }
        let mut skip = refused.iter().map(|&(i, _)| i).peekable();
        let kept = samples
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                if skip.peek() == Some(i) {
                    skip.next();
                    false
                } else {
                    true
                }
            })
            .map(|(_, s)| *s)
            .collect();
        Some(Split {
            kept,
            refused,
            total: samples.len(),
        })
    }

    /// Participants whose changes differ between `self` and `other` (a change one has and
    /// the other has not, or has otherwise): the only ones whose readings the two versions may
    /// decide differently.
    pub fn changed_between<'a>(&'a self, other: &'a Consent) -> HashSet<&'a str> {
        let mut out = HashSet::new();
        for (seq, c) in &self.changes {
            if other.changes.get(seq) != Some(c) {
                out.insert(c.0.as_str());
            }
        }
        for (seq, c) in &other.changes {
            if self.changes.get(seq) != Some(c) {
                out.insert(c.0.as_str());
            }
        }
        out
    }
}

/// The readings of one record that are refused, and those that are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The samples stored, in record order.
    pub kept: Vec<Sample>,
    /// The samples refused: (index in the record, status), ascending.
    pub refused: Vec<(usize, Status)>,
    /// Samples in the record.
    pub total: usize,
}

impl Split {
    /// The dead-letter reason: `erased` when the refused readings are an erased participant's,
    /// else `withdrawn`.
    pub fn reason(&self) -> Status {
        if self.refused.iter().any(|&(_, s)| s == Status::Erased) {
            Status::Erased
        } else {
            Status::Withdrawn
        }
    }

    /// The dead letter's `vitalsink.detail`: who, by which table version, and which samples
    /// (indexes in the record's `samples`, 0-based; a reading-form record is sample 0).
    pub fn detail(&self, participant: &str, version: i64) -> String {
        let mut ranges = String::new();
        let mut i = 0;
        while i < self.refused.len() {
            let start = self.refused[i].0;
            let mut end = start;
            while i + 1 < self.refused.len() && self.refused[i + 1].0 == end + 1 {
                i += 1;
                end = self.refused[i].0;
            }
            if !ranges.is_empty() {
                ranges.push_str(", ");
            }
            if start == end {
                let _ = write!(ranges, "{start}");
            } else {
                let _ = write!(ranges, "{start}-{end}");
            }
            i += 1;
        }
        format!(
            "participant {participant} {} (participant_status version {version}): {} of {} \
             readings refused, samples [{ranges}]; the other {} stored",
            self.reason().as_str(),
            self.refused.len(),
            self.total,
            self.kept.len()
        )
    }
}

/// What the rows (and refused readings) of one batch were decided with: the consent of the
/// batch's shard, the participants concerned, and the pipeline's generation (it changes at
/// every rewind, [`crate::data::pipeline::Pipeline::rewind`]). The writer checks it in the
/// transaction that commits the batch ([`crate::data::guard::check`]).
#[derive(Debug, Clone, Default)]
pub struct Label {
    /// The consent every decision of the batch was made with; `None`: the batch decides
    /// nothing (no record routed to its shard: progress only).
    pub consent: Option<Arc<Consent>>,
    /// Every participant with a reading decided in the batch, stored or refused.
    pub participants: HashSet<Box<str>>,
    /// The pipeline's generation when the batch was cut.
    pub generation: u64,
}

impl Label {
    /// A reading of `participant` was decided with `consent` (the same for every reading of
    /// one batch: the pipeline cuts a shard's buffer before its consent changes).
    pub fn note(&mut self, consent: &Arc<Consent>, participant: &str) {
        if self.consent.is_none() {
            self.consent = Some(Arc::clone(consent));
        }
        if !self.participants.contains(participant) {
            self.participants.insert(participant.into());
        }
    }

    /// Whether no reading was decided yet.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn change(seq: i64, p: &str, status: Status, eff_s: i64) -> Change {
        let at = DateTime::from_timestamp(eff_s, 0).unwrap();
        Change {
            seq,
            participant_id: p.into(),
            status,
            effective_at: at,
            recorded_at: at,
            reason: "test".into(),
            audit_seq: None,
        }
    }

    /// Samples at the given seconds, value = index.
    fn samples(secs: &[i64]) -> Vec<Sample> {
        secs.iter()
            .enumerate()
            .map(|(i, &s)| Sample {
                ts_micros: s * 1_000_000,
                value: i as f64,
                utc_offset_min: Some(0),
            })
            .collect()
    }

    #[test]
    fn a_record_straddling_the_effective_time_is_split_at_it() {
        let c = Consent::from_changes(&[change(1, "p", Status::Withdrawn, 100)]);
        let s = samples(&[98, 99, 100, 101]);
        let split = c.split("p", &s).expect("two readings refused");
        assert_eq!(
            split.kept,
            s[..2].to_vec(),
            "the readings before are stored"
        );
        assert_eq!(
            split.refused,
            vec![(2, Status::Withdrawn), (3, Status::Withdrawn)],
            "from the effective time on (inclusive)"
        );
        assert_eq!(split.reason(), Status::Withdrawn);
        assert_eq!(
            split.detail("p", 1),
            "participant p withdrawn (participant_status version 1): 2 of 4 readings refused, \
             samples [2-3]; the other 2 stored"
        );
        assert_eq!(c.split("p", &samples(&[1, 99])), None, "all before: stored");
        assert_eq!(c.split("q", &samples(&[500])), None, "someone else: stored");
    }

    #[test]
    fn unordered_samples_are_decided_one_by_one_and_named_as_ranges() {
        let c = Consent::from_changes(&[change(1, "p", Status::Withdrawn, 100)]);
        let split = c.split("p", &samples(&[100, 5, 200, 201, 7, 300])).unwrap();
        assert_eq!(
            split.refused.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 2, 3, 5]
        );
        assert_eq!(
            split.kept.iter().map(|s| s.value).collect::<Vec<_>>(),
            vec![1.0, 4.0]
        );
        assert!(split.detail("p", 1).contains("samples [0, 2-3, 5]"));
    }

    #[test]
    fn a_reinstatement_and_an_erasure() {
        let c = Consent::from_changes(&[
            change(1, "p", Status::Withdrawn, 100),
            change(2, "p", Status::Active, 200),
            change(3, "e", Status::Erased, 1_000),
        ]);
        let split = c.split("p", &samples(&[150, 250])).unwrap();
        assert_eq!(split.refused, vec![(0, Status::Withdrawn)]);
        assert_eq!(c.split("p", &samples(&[250, 99])), None);
        let erased = c.split("e", &samples(&[1, 2_000])).unwrap();
        assert!(erased.kept.is_empty(), "an erased participant at any time");
        assert_eq!(erased.reason(), Status::Erased);
        assert!(erased.detail("e", 3).starts_with("participant e erased"));
        assert_eq!(c.version(), 3);
    }

    #[test]
    fn kept_samples_keep_their_occurrence() {
        // Two readings at one instant with one value: both on the same side of the split.
        let c = Consent::from_changes(&[change(1, "p", Status::Withdrawn, 100)]);
        let mut s = samples(&[50, 50, 150, 150]);
        s[1].value = s[0].value;
        s[3].value = s[2].value;
        let split = c.split("p", &s).unwrap();
        assert_eq!(
            crate::data::copy_format::occurrences(&split.kept),
            crate::data::copy_format::occurrences(&s).map(|o| o[..2].to_vec())
        );
    }

    #[test]
    fn versions_are_compared_by_the_participants_they_change() {
        let v1 = Consent::from_changes(&[change(1, "p", Status::Withdrawn, 100)]);
        let v2 = Consent::from_changes(&[
            change(1, "p", Status::Withdrawn, 100),
            change(2, "q", Status::Withdrawn, 100),
        ]);
        let expect: HashSet<&str> = ["q"].into();
        assert_eq!(v1.changed_between(&v2), expect);
        assert_eq!(v2.changed_between(&v1), expect, "either way round");
        assert!(v2.changed_between(&v2).is_empty());
        let other = Consent::from_changes(&[change(1, "r", Status::Withdrawn, 100)]);
        let expect: HashSet<&str> = ["p", "r"].into();
        assert_eq!(
            v1.changed_between(&other),
            expect,
            "one seq, two changes: both participants"
        );
    }

    #[test]
    fn a_label_takes_the_first_consent_and_each_participant_once() {
        let a = Arc::new(Consent::default());
        let b = Arc::new(Consent::from_changes(&[change(1, "p", Status::Erased, 0)]));
        let mut l = Label::default();
        assert!(l.is_empty());
        l.note(&a, "p");
        l.note(&b, "p");
        l.note(&b, "q");
        assert!(Arc::ptr_eq(l.consent.as_ref().unwrap(), &a));
        assert_eq!(l.participants.len(), 2);
    }
}
