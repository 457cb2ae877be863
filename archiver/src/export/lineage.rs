//! An object's lineage, gathered while its rows stream through the export: per Kafka topic
//! partition the smallest and largest source offset of its rows (the footer's and manifest
//! entry's `vitalsink.source_ranges`; schemas/README.md, "A reading's identity, time and
//! source"). From a row back to its record the row's own `src_topic`, `src_partition` and
//! `src_offset` suffice; these ranges go the other way, from a record to the objects that may
//! hold it.

/// One topic's partitions and their (smallest, largest) offsets, sorted by partition.
type Partitions = Vec<(i32, (i64, i64))>;

/// An object's lineage gathered while its rows stream: per (`src_topic`, `src_partition`) the
/// smallest and largest `src_offset`. Memory is one entry per topic partition seen, whatever
/// the rows; rows with a NULL in any of the three are left out.
#[derive(Debug, Clone, Default)]
pub struct SourceRanges {
    /// Per topic (in the order first seen), its partitions' ranges sorted by partition.
    topics: Vec<(String, Partitions)>,
    /// Where the previous row's range is (topic, partition entry): consecutive rows (one
    /// participant's) mostly share it, and a row then costs an integer and a string
    /// comparison, no search and no allocation.
    last: Option<(usize, usize)>,
}

impl SourceRanges {
    /// Counts one row's lineage.
    pub fn add(&mut self, topic: &str, partition: i32, offset: i64) {
        self.add_rows(topic, &[partition], &[offset], |_| true);
    }

    /// Counts the lineage of rows that share `topic`: row `i` has `partitions[i]` and
    /// `offsets[i]`, and is left out unless `present(i)` (a NULL partition or offset).
    /// The topic is looked up once; consecutive rows (one participant's) mostly share a
    /// partition, and a row then costs an integer comparison.
    pub fn add_rows(
        &mut self,
        topic: &str,
        partitions: &[i32],
        offsets: &[i64],
        present: impl Fn(usize) -> bool,
    ) {
        let t = match self.topics.iter().position(|(n, _)| n == topic) {
            Some(t) => t,
            None => {
                self.topics.push((topic.to_string(), Vec::new()));
                self.topics.len() - 1
            }
        };
        let Some((_, parts)) = self.topics.get_mut(t) else {
            return;
        };
        let mut last = self.last.filter(|(lt, _)| *lt == t).map(|(_, p)| p);
        for (i, (&partition, &offset)) in partitions.iter().zip(offsets).enumerate() {
            if !present(i) {
                continue;
            }
            if let Some((q, r)) = last.and_then(|p| parts.get_mut(p)) {
                if *q == partition {
                    r.0 = r.0.min(offset);
                    r.1 = r.1.max(offset);
                    continue;
                }
            }
            let p = match parts.binary_search_by_key(&partition, |(q, _)| *q) {
                Ok(p) => {
                    if let Some((_, r)) = parts.get_mut(p) {
                        r.0 = r.0.min(offset);
                        r.1 = r.1.max(offset);
                    }
                    p
                }
                Err(p) => {
                    parts.insert(p, (partition, (offset, offset)));
                    p
                }
            };
            last = Some(p);
        }
        if let Some(p) = last {
            self.last = Some((t, p));
        }
    }

    /// `topic/partition:first-last` per topic partition in (topic, partition) order, joined
    /// by `,` (empty without lineage): the footer's and manifest entry's
    /// `vitalsink.source_ranges`.
    pub fn render(&self) -> String {
        let mut topics: Vec<_> = self.topics.iter().collect();
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        topics
            .iter()
            .flat_map(|(t, parts)| {
                parts
                    .iter()
                    .map(move |(p, (lo, hi))| format!("{t}/{p}:{lo}-{hi}"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_are_kept_per_topic_partition_in_order() {
        let mut r = SourceRanges::default();
        assert_eq!(r.render(), "");
        // Partitions and topics interleaved row by row, negative and large partitions.
        for (t, p, o) in [
            ("vitals", 3, 10),
            ("vitals", 1, 7),
            ("alpha", 3, 5),
            ("vitals", 3, 2),
            ("vitals", 1, 9),
            ("vitals", -1, 0),
            ("alpha", 3, 6),
            ("vitals", 1000, 1),
            ("vitals", 3, 11),
        ] {
            r.add(t, p, o);
        }
        assert_eq!(
            r.render(),
            "alpha/3:5-6,vitals/-1:0-0,vitals/1:7-9,vitals/3:2-11,vitals/1000:1-1"
        );
    }

    #[test]
    fn rows_added_together_count_as_rows_added_one_by_one_without_the_absent() {
        // One topic's rows in a batch: rows 2 and 4 have a NULL partition or offset.
        let (parts, offs) = ([1, 1, 9, 0, 1, 0], [40, 7, 100, 3, 2, 5]);
        let present = |i: usize| i != 2 && i != 4;
        let mut together = SourceRanges::default();
        together.add_rows("vitals", &parts, &offs, present);
        let mut one_by_one = SourceRanges::default();
        for i in (0..parts.len()).filter(|&i| present(i)) {
            one_by_one.add("vitals", parts[i], offs[i]);
        }
        assert_eq!(together.render(), "vitals/0:3-5,vitals/1:7-40");
        assert_eq!(together.render(), one_by_one.render());
    }
}
