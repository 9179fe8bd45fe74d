//! Summaries of repeated measurements.

/// The median of some figures: the middle one, the upper of the two middle ones for an even
/// count, 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_middle_figure_whatever_the_order() {
        assert_eq!(median(vec![1.4, 0.9, 5.0, 1.1, 1.2]), 1.2);
    }

    #[test]
    fn an_even_count_takes_the_upper_middle_figure() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }

    #[test]
    fn one_figure_is_its_own_median_and_none_gives_zero() {
        assert_eq!(median(vec![7.5]), 7.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
