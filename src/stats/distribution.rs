//! Reference vs window shares per bin or category, for people: the dashboard's
//! distribution charts. Derived from the same sketches the scores come from.

use super::categorical::OTHER_CATEGORY;
use super::profile::FeatureStats;
use super::reference::{FeatureModel, Reference};
use super::sketch::{FeatureSketch, WindowSketch};
use serde::{Deserialize, Serialize};

/// Categories shown per feature; the rest are pooled as `__other__`.
const MAX_SHOWN_CATEGORIES: usize = 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDistribution {
    pub name: String,
    pub kind: super::FeatureKind,
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// One entry per feature of the reference, in its order.
pub fn distributions(reference: &Reference, window: &WindowSketch) -> Vec<FeatureDistribution> {
    reference
        .features
        .iter()
        .zip(&reference.profile.features)
        .zip(&window.features)
        .map(|((feature, profile), sketch)| {
            let (labels, reference_counts, current_counts) = match (&feature.model, &profile.stats, sketch) {
                (
                    FeatureModel::Numeric { cell_bins, .. },
                    FeatureStats::Numeric(p),
                    FeatureSketch::Numeric(s),
                ) => {
                    let labels = bin_labels(&p.bin_edges);
                    (labels, p.bin_counts.clone(), s.bin_counts(cell_bins, p.bin_counts.len()))
                }
                (_, FeatureStats::Categorical(p), FeatureSketch::Categorical(s)) => {
                    let mut rows: Vec<(String, u64, u64)> = p
                        .categories
                        .iter()
                        .zip(s.reference_counts())
                        .map(|(c, &w)| (c.name.clone(), c.count, w))
                        .collect();
                    rows.extend(s.new_categories().into_iter().map(|(name, w)| (name.to_owned(), 0, w)));
                    let (n, m) = (p.n.max(1) as f64, s.count().max(1) as f64);
                    rows.sort_by(|a, b| {
                        let share = |r: &(String, u64, u64)| (r.1 as f64 / n).max(r.2 as f64 / m);
                        share(b).total_cmp(&share(a)).then_with(|| a.0.cmp(&b.0))
                    });
                    let mut other = (p.other, s.overflow);
                    for row in rows.iter().skip(MAX_SHOWN_CATEGORIES) {
                        other.0 += row.1;
                        other.1 += row.2;
                    }
                    rows.truncate(MAX_SHOWN_CATEGORIES);
                    if other.0 + other.1 > 0 {
                        rows.push((OTHER_CATEGORY.to_owned(), other.0, other.1));
                    }
                    let labels = rows.iter().map(|r| r.0.clone()).collect();
                    (labels, rows.iter().map(|r| r.1).collect(), rows.iter().map(|r| r.2).collect())
                }
                _ => (Vec::new(), Vec::new(), Vec::new()),
            };
            FeatureDistribution {
                name: feature.name.clone(),
                kind: feature.kind,
                labels,
                reference: shares(&reference_counts),
                current: shares(&current_counts),
            }
        })
        .collect()
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.iter().map(|&c| c as f64 / total).collect()
}

fn bin_labels(edges: &[f64]) -> Vec<String> {
    let fmt = |x: f64| {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".to_owned() } else { s.to_owned() }
    };
    let mut out = Vec::with_capacity(edges.len() + 1);
    let mut lower = "-inf".to_owned();
    for &e in edges {
        let upper = fmt(e);
        out.push(format!("({lower}, {upper}]"));
        lower = upper;
    }
    out.push(format!("({lower}, +inf)"));
    out
}
