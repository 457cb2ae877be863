use super::*;
use crate::export::pgcopy::BatchBuilder;
use crate::export::prov::Prov;
use arrow::array::Array;
use parquet::arrow::ArrowWriter;
use parquet::file::reader::{FileReader, SerializedFileReader};

#[test]
fn every_column_is_written_with_its_field_id() {
    let mut b = BatchBuilder::new(2);
    let prov = Prov::from_options([Some(60), Some(0), Some(1_000), Some(0), Some(3), Some(42)]);
    b.append(
        [
            Some("P1"),
            Some("hr"),
            Some("bpm"),
            None,
            None,
            Some("vitals"),
        ],
        5,
        61.0,
        &prov,
    );
    b.append(
        [Some("P2"), Some("hr"), None, None, None, None],
        6,
        62.0,
        &Prov::default(),
    );
    let batch = b.finish().unwrap();
    let mut buf = Vec::new();
    let props = writer_properties(1024, vec![kv(keys::SCHEMA_VERSION, FORMAT_VERSION)]);
    let mut w = ArrowWriter::try_new(&mut buf, schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let buf = bytes::Bytes::from(buf);
    let r = SerializedFileReader::new(buf.clone()).unwrap();
    let descr = r.metadata().file_metadata().schema_descr();
    assert_eq!(descr.num_columns(), COLUMNS.len());
    let ids: Vec<(String, i32)> = descr
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| (f.name().to_string(), f.get_basic_info().id()))
        .collect();
    let want: Vec<(String, i32)> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as i32 + 1))
        .collect();
    assert_eq!(ids, want);
    // Read back, the rows are the ones written, provenance and NULLs included.
    let back: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(buf)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].columns(), batch.columns());
    let c = Columns::of(&back[0], "t").unwrap();
    let p = c.prov.unwrap();
    assert_eq!(p.src_offset.value(0), 42);
    assert_eq!(p.received_at.value(0), 1_000);
    assert!(p.src_offset.is_null(1) && p.src_topic.is_null(1));
}
