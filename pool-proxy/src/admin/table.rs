//! A result set of the console: PgBouncer's column types (text or int8), written as
//! RowDescription, a DataRow per row and CommandComplete `SHOW`.

use crate::protocol::backend::{command_complete, write_message};

/// A column's type: text or int8, as PgBouncer's.
#[derive(Clone, Copy)]
pub(crate) enum Column {
    Text(&'static str),
    Int(&'static str),
}

/// A result set being written.
pub(crate) struct Table {
    pub columns: &'static [Column],
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// RowDescription, a DataRow per row, CommandComplete `SHOW`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.columns.len() as u16).to_be_bytes());
        for column in self.columns {
            let (name, type_oid, type_len): (&str, u32, i16) = match column {
                Column::Text(name) => (name, 25, -1),
                Column::Int(name) => (name, 20, 8),
            };
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&0u32.to_be_bytes()); // table
            body.extend_from_slice(&0i16.to_be_bytes()); // column
            body.extend_from_slice(&type_oid.to_be_bytes());
            body.extend_from_slice(&type_len.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
            body.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
        write_message(out, b'T', &body);
        for row in &self.rows {
            let mut body = Vec::new();
            body.extend_from_slice(&(row.len() as u16).to_be_bytes());
            for value in row {
                body.extend_from_slice(&(value.len() as u32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
            write_message(out, b'D', &body);
        }
        command_complete(out, "SHOW");
    }
}
