//! The one table printer of the `relay` commands (`relay token list`,
//! `relay route list`, `relay user list`, `relay tools list`, `relay audit`):
//! a line of titles, then a line per row, the columns two spaces apart.
//!
//! A column has a width: its cells are padded to it (left or right aligned),
//! and it grows to its widest cell, so that a long value pushes the whole
//! column rather than the rest of its own line. A column without a width
//! (the last one, usually) is not padded at all.

use std::fmt;

/// How a column's cells sit in its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column: its title, its least width (`None`: not padded) and its
/// alignment.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    title: &'static str,
    width: Option<usize>,
    align: Align,
}

impl Column {
    /// A left-aligned column padded to at least `width` characters.
    pub fn left(title: &'static str, width: usize) -> Column {
        Column {
            title,
            width: Some(width),
            align: Align::Left,
        }
    }

    /// A right-aligned column padded to at least `width` characters.
    pub fn right(title: &'static str, width: usize) -> Column {
        Column {
            title,
            width: Some(width),
            align: Align::Right,
        }
    }

    /// A column whose cells are printed as they are (the last one).
    pub fn rest(title: &'static str) -> Column {
        Column {
            title,
            width: None,
            align: Align::Left,
        }
    }
}

/// A table being filled; [`fmt::Display`] prints it.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: impl Into<Vec<Column>>) -> Table {
        Table {
            columns: columns.into(),
            rows: Vec::new(),
        }
    }

    /// Adds a row, one cell per column (missing cells are empty).
    pub fn row<I>(&mut self, cells: I)
    where
        I: IntoIterator,
        I::Item: fmt::Display,
    {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// Each column's width: its least width, or its widest cell (titles
    /// included) if wider; `None` for a column that is not padded.
    fn widths(&self) -> Vec<Option<usize>> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.width.map(|least| {
                    self.rows
                        .iter()
                        .filter_map(|r| r.get(i))
                        .map(|cell| cell.chars().count())
                        .chain([c.title.chars().count(), least])
                        .max()
                        .unwrap_or(least)
                })
            })
            .collect()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        let titles: Vec<&str> = self.columns.iter().map(|c| c.title).collect();
        let lines = std::iter::once(titles).chain(
            self.rows
                .iter()
                .map(|r| r.iter().map(String::as_str).collect()),
        );
        for cells in lines {
            for (i, (column, width)) in self.columns.iter().zip(&widths).enumerate() {
                if i > 0 {
                    f.write_str("  ")?;
                }
                let cell = cells.get(i).copied().unwrap_or_default();
                match (width, column.align) {
                    (None, _) => f.write_str(cell)?,
                    (Some(w), Align::Left) => write!(f, "{cell:<w$}")?,
                    (Some(w), Align::Right) => write!(f, "{cell:>w$}")?,
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_to_the_least_width() {
        let mut t = Table::new([
            Column::left("ROUTE", 8),
            Column::right("N", 3),
            Column::rest("OWNER"),
        ]);
        t.row(["db", "1", "alice@x"]);
        t.row(["notes", "12", "bob@x"]);
        assert_eq!(
            t.to_string(),
            "ROUTE       N  OWNER\n\
             db          1  alice@x\n\
             notes      12  bob@x\n"
        );
    }

    #[test]
    fn a_wider_cell_widens_its_column() {
        let mut t = Table::new([Column::left("ROUTE", 4), Column::rest("OWNER")]);
        t.row(["a-long-route", "alice@x"]);
        t.row(["db", "bob@x"]);
        assert_eq!(
            t.to_string(),
            "ROUTE         OWNER\n\
             a-long-route  alice@x\n\
             db            bob@x\n"
        );
    }

    #[test]
    fn widths_count_characters_and_a_padded_last_column_keeps_its_padding() {
        let mut t = Table::new([Column::left("NAME", 4), Column::left("X", 2)]);
        t.row(["é", "1"]);
        assert_eq!(t.to_string(), "NAME  X \né     1 \n");
    }

    #[test]
    fn an_empty_table_is_its_titles() {
        let t = Table::new([Column::left("EMAIL", 6), Column::rest("ADDED")]);
        assert_eq!(t.to_string(), "EMAIL   ADDED\n");
    }
}
