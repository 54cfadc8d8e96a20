//! Aligned plain-text tables, as `kubectl get` prints them: upper-case headers, columns
//! separated by three spaces, no trailing blanks.

use jiff::Timestamp;

/// Column separator (kubectl's).
const GAP: &str = "   ";

/// A table of headers and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra ones are dropped. Line breaks in a cell
    /// (a condition message) become spaces, so one row stays one line.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|c| c.into().replace(['\n', '\r', '\t'], " "))
            .take(self.headers.len())
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str(GAP);
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell for an optional value: the value, or `<none>` as kubectl writes it.
pub fn or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "<none>".to_string(), |v| v.to_string())
}

/// How long ago (or from now) `then` is, in kubectl's style: `45s`, `12m`, `5h`, `3d`, `2y`.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second().abs_diff(then.as_second());
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 2 * 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

/// An RFC 3339 time with how far it is from now (`… (3d ago)`, `… (in 89d)`); a value that
/// does not parse is shown as it is.
pub fn timestamp_with_distance(text: &str, now: Timestamp) -> String {
    match text.parse::<Timestamp>() {
        Ok(then) if then <= now => format!("{text} ({} ago)", age(then, now)),
        Ok(then) => format!("{text} (in {})", age(then, now)),
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column starts at the same offset on every line, whatever the cell widths.
    #[test]
    fn columns_line_up_under_their_headers() {
        let mut table = Table::new(["type", "status", "message"]);
        table.row(["Ready", "True", "all good"]);
        table.row(["CoordinatorAvailable", "False", "no endpoints"]);
        let text = table.render();
        assert_eq!(
            text,
            "TYPE                   STATUS   MESSAGE\n\
             Ready                  True     all good\n\
             CoordinatorAvailable   False    no endpoints\n"
        );
    }

    /// A multi-line condition message stays on its row; short rows are padded, not shifted.
    #[test]
    fn a_cell_never_breaks_a_row() {
        let mut table = Table::new(["a", "b", "c"]);
        table.row(["x\ny", "z"]);
        let text = table.render();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(text.lines().nth(1), Some("x y   z"));
    }

    #[test]
    fn wide_characters_count_once() {
        let mut table = Table::new(["name", "n"]);
        table.row(["é", "1"]);
        table.row(["ab", "2"]);
        let text = table.render();
        assert_eq!(text, "NAME   N\né      1\nab     2\n");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = "2026-12-03T20:00:00Z".parse().unwrap();
        let ago = |s: i64| age(now - jiff::SignedDuration::from_secs(s), now);
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(600), "10m");
        assert_eq!(ago(5 * 3600), "5h");
        assert_eq!(ago(89 * 86_400), "89d");
        assert_eq!(
            timestamp_with_distance("2027-03-03T20:00:00Z", now),
            "2027-03-03T20:00:00Z (in 90d)"
        );
        assert_eq!(
            timestamp_with_distance("2026-12-03T19:59:00Z", now),
            "2026-12-03T19:59:00Z (60s ago)"
        );
        assert_eq!(timestamp_with_distance("soon", now), "soon");
    }
}
