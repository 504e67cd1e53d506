//! The SVG chart of the results page: connections active and broken over time, as the lab's
//! client chart shows them, with a vertical marker at each event.

use plotters::prelude::*;
use tierlab_lab::report::TimelineBucket;

/// An event to mark on the chart.
#[derive(Clone, Debug)]
pub(crate) struct Marker {
    /// When, in seconds of virtual time.
    pub(crate) at_s: f64,
    /// What (e.g. `proxy_added proxy14`).
    pub(crate) label: String,
}

/// Width and height of the chart, in SVG pixels.
const SIZE: (u32, u32) = (960, 480);

/// Draws `buckets` (each `bucket_s` wide, the run ending at `end_s`) as an SVG document:
/// connections active at the end of each bucket, connections broken during it, and the
/// events as vertical lines.
///
/// # Errors
/// What plotters reports when it cannot lay out the chart (as text).
pub(crate) fn svg(
    title: &str,
    buckets: &[TimelineBucket],
    bucket_s: f64,
    end_s: f64,
    markers: &[Marker],
) -> Result<String, String> {
    let top = buckets
        .iter()
        .map(|b| b.active.max(b.broken))
        .max()
        .unwrap_or(0);
    // Headroom for the event labels, rounded to a multiple of 50 connections.
    let y_max = ((top + top / 5) / 50 + 1) * 50;
    let x_max = if end_s > 0.0 { end_s } else { 1.0 };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0u64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("virtual time (s)")
            .y_desc("connections")
            .x_labels(11)
            .y_labels(8)
            .max_light_lines(1)
            .light_line_style(BLACK.mix(0.05))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        let active_color = RGBColor(31, 119, 180);
        let broken_color = RGBColor(214, 39, 40);
        let marker_color = RGBColor(120, 120, 120);
        let active: Vec<(f64, u64)> = buckets
            .iter()
            .map(|b| ((b.from_s + bucket_s).min(x_max), b.active))
            .collect();
        chart
            .draw_series(LineSeries::new(active, active_color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("connections active")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], active_color.stroke_width(2))
            });
        // Broken per bucket, drawn as steps: the count holds across its bucket.
        let broken: Vec<(f64, u64)> = buckets
            .iter()
            .flat_map(|b| {
                let to = (b.from_s + bucket_s).min(x_max);
                [(b.from_s, b.broken), (to, b.broken)]
            })
            .collect();
        chart
            .draw_series(LineSeries::new(broken, broken_color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("connections broken per {bucket_s} s"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], broken_color.stroke_width(2))
            });
        for m in markers {
            chart
                .draw_series(DashedLineSeries::new(
                    [(m.at_s, 0), (m.at_s, y_max)],
                    6,
                    4,
                    marker_color.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" {}", m.label),
                    (m.at_s, y_max - y_max / 40),
                    ("sans-serif", 13).into_font().color(&marker_color),
                )))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_series_and_the_markers() {
        let buckets: Vec<TimelineBucket> = (0..10)
            .map(|i| TimelineBucket {
                from_s: f64::from(i) * 0.5,
                active: 200,
                broken: if i == 6 { 38 } else { 0 },
            })
            .collect();
        let markers = [Marker {
            at_s: 3.0,
            label: "ecmp_reordered".into(),
        }];
        let a = svg("test", &buckets, 0.5, 5.0, &markers).unwrap();
        let b = svg("test", &buckets, 0.5, 5.0, &markers).unwrap();
        assert_eq!(a, b, "same data, same bytes");
        assert!(a.starts_with("<svg"), "{}", &a[..40.min(a.len())]);
        assert!(a.contains("ecmp_reordered"));
        assert!(a.contains("connections active"));
        assert!(
            a.matches("<polyline").count() >= 3,
            "two series and a marker"
        );
    }
}
