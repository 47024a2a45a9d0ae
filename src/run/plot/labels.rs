//! Where the stage labels go. A stage can be too short for its name ("1 cache" next to
//! "2 cache"), so labels are laid out in rows above the chart: each label starts where its stage
//! starts and takes the first row in which it keeps [`GAP`] pixels from every label already
//! there. Rows have a fixed height, so two labels in different rows never meet, and two in one
//! row are apart by construction.

/// Horizontal pixels kept free between two labels in one row.
pub const GAP: i32 = 6;

/// A label's place: its left edge and width in pixels, and its row (0 is the one nearest the
/// chart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub x: i32,
    pub width: i32,
    pub row: usize,
}

impl Placed {
    fn end(&self) -> i32 {
        self.x + self.width
    }

    /// Whether `self` and `other` are at least [`GAP`] apart horizontally.
    fn clear_of(&self, other: &Placed) -> bool {
        self.x >= other.end() + GAP || other.x >= self.end() + GAP
    }
}

/// Places `labels`, given as (anchor, width) in pixels, in order. A label starts at its anchor
/// unless it would then end past `right`: it is moved left to end there (not past 0), so it
/// stays over the chart instead of running into whatever is beside it.
pub fn place(labels: &[(i32, i32)], right: i32) -> Vec<Placed> {
    let mut placed: Vec<Placed> = Vec::with_capacity(labels.len());
    for &(anchor, width) in labels {
        let x = anchor.min(right - width).max(0);
        let mut label = Placed { x, width, row: 0 };
        while placed
            .iter()
            .any(|p| p.row == label.row && !p.clear_of(&label))
        {
            label.row += 1;
        }
        placed.push(label);
    }
    placed
}

/// How many rows `placed` uses.
pub fn rows(placed: &[Placed]) -> usize {
    placed.iter().map(|p| p.row + 1).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A label's box in pixels, `row_height` pixels per row: (x0, y0, x1, y1), exclusive ends.
    fn rect(p: &Placed, row_height: i32) -> (i32, i32, i32, i32) {
        let y = p.row as i32 * row_height;
        (p.x, y, p.end(), y + row_height)
    }

    fn intersect(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> bool {
        a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
    }

    #[test]
    fn short_stages_get_their_own_rows() {
        // "1 cache" and "2 cache" start 20 px apart and are 50 px wide: the second moves up.
        let placed = place(&[(0, 50), (20, 50), (200, 50)], 1000);
        assert_eq!(
            placed.iter().map(|p| p.row).collect::<Vec<_>>(),
            vec![0, 1, 0]
        );
        assert_eq!(rows(&placed), 2);
    }

    #[test]
    fn a_label_at_the_right_edge_moves_left_to_end_there() {
        let placed = place(&[(980, 50)], 1000);
        assert_eq!(placed[0].x, 950);
        assert!(rows(&[]) == 0);
    }

    proptest! {
        /// For random stage spans (sorted start times, as the plots have them, or in any
        /// order) and label widths, no two label boxes intersect; each label starts at its
        /// stage unless that would push it past the right edge; and a label goes to a higher
        /// row only when every lower row has a label in its way.
        #[test]
        fn label_boxes_never_intersect(
            mut spans in prop::collection::vec((0i32..1400, 1i32..260), 0..60),
            sorted in any::<bool>(),
            right in 300i32..1400,
            row_height in 10i32..24,
        ) {
            if sorted {
                spans.sort_unstable();
            }
            let placed = place(&spans, right);
            prop_assert_eq!(placed.len(), spans.len());
            for (i, a) in placed.iter().enumerate() {
                let (anchor, width) = spans[i];
                prop_assert_eq!(a.width, width);
                if anchor + width <= right {
                    prop_assert_eq!(a.x, anchor);
                } else {
                    prop_assert_eq!(a.x, (right - width).max(0));
                }
                for b in &placed[..i] {
                    prop_assert!(
                        !intersect(rect(a, row_height), rect(b, row_height)),
                        "{:?} and {:?} overlap", a, b
                    );
                    if a.row == b.row {
                        prop_assert!(a.x >= b.end() + GAP || b.x >= a.end() + GAP);
                    }
                }
                for lower in 0..a.row {
                    prop_assert!(
                        placed[..i].iter().any(|b| b.row == lower && !b.clear_of(a)),
                        "{:?} could have gone to row {}", a, lower
                    );
                }
            }
        }
    }
}
