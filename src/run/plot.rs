//! The run's pictures, as SVG and PNG:
//!
//! - `timeline`: the heap drawn as Spark's regions at their layout boundaries — reserved,
//!   user (filled as UDF objects take it), and the unified pool with storage filling from the
//!   bottom and execution from the top, the moving pool boundary between them and the fixed
//!   storage region (dashed) — then the off-heap arena above it the same way, the process's
//!   resident memory as a line, and markers where tasks spilled and blocks were evicted;
//! - `spill_per_task`: memory and disk bytes spilled by each task.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::timeline::Sample;

use super::report::Report;

/// The files [`draw_all`] writes.
pub const FILES: [&str; 4] = [
    "timeline.svg",
    "timeline.png",
    "spill_per_task.svg",
    "spill_per_task.png",
];

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Draws every plot into `out_dir`.
pub fn draw_all(report: &Report, samples: &[Sample], out_dir: &Path) -> PlotResult {
    let paths: Vec<_> = FILES.iter().map(|f| out_dir.join(f)).collect();
    let size = (1400, 800);
    {
        let root = SVGBackend::new(&paths[0], size).into_drawing_area();
        timeline(&root, report, samples)?;
        root.present()?;
    }
    {
        let root = BitMapBackend::new(&paths[1], size).into_drawing_area();
        timeline(&root, report, samples)?;
        root.present()?;
    }
    let size = (1200, 600);
    {
        let root = SVGBackend::new(&paths[2], size).into_drawing_area();
        spill_per_task(&root, report)?;
        root.present()?;
    }
    {
        let root = BitMapBackend::new(&paths[3], size).into_drawing_area();
        spill_per_task(&root, report)?;
        root.present()?;
    }
    Ok(())
}

const MIB: f64 = (1u64 << 20) as f64;

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

const RESERVED: RGBColor = RGBColor(150, 150, 150);
const USER: RGBColor = RGBColor(222, 170, 90);
const STORAGE: RGBColor = RGBColor(70, 130, 200);
const EXECUTION: RGBColor = RGBColor(220, 90, 70);
const OFF_STORAGE: RGBColor = RGBColor(110, 180, 230);
const OFF_EXECUTION: RGBColor = RGBColor(240, 150, 120);

fn band<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    samples: &[Sample],
    lo: impl Fn(&Sample) -> f64,
    hi: impl Fn(&Sample) -> f64,
    color: RGBColor,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let mut pts: Vec<(f64, f64)> = samples.iter().map(|s| (s.t_ms / 1e3, hi(s))).collect();
    pts.extend(samples.iter().rev().map(|s| (s.t_ms / 1e3, lo(s))));
    chart.draw_series(std::iter::once(Polygon::new(pts, color.mix(0.75).filled())))?;
    Ok(())
}

fn hline<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    x_max: f64,
    y: f64,
    style: ShapeStyle,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    chart.draw_series(LineSeries::new([(0.0, y), (x_max, y)], style))?;
    Ok(())
}

/// Legend entries drawn in the right-hand column: a swatch and a label.
enum Swatch {
    Fill(RGBColor),
    Line(RGBColor),
    Dashed(RGBColor),
    Triangle(RGBColor),
    Cross(RGBColor),
}

fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    items: &[(Swatch, &str)],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 14).into_font();
    area.draw(&Text::new(
        title.to_string(),
        (10, 10),
        ("sans-serif", 15).into_font().style(FontStyle::Bold),
    ))?;
    for (i, (swatch, label)) in items.iter().enumerate() {
        let y = 36 + i as i32 * 22;
        match swatch {
            Swatch::Fill(c) => area.draw(&Rectangle::new(
                [(10, y), (28, y + 12)],
                c.mix(0.75).filled(),
            ))?,
            Swatch::Line(c) => area.draw(&PathElement::new(
                [(10, y + 6), (28, y + 6)],
                c.stroke_width(2),
            ))?,
            Swatch::Dashed(c) => {
                area.draw(&PathElement::new(
                    [(10, y + 6), (16, y + 6)],
                    c.stroke_width(2),
                ))?;
                area.draw(&PathElement::new(
                    [(21, y + 6), (28, y + 6)],
                    c.stroke_width(2),
                ))?;
            }
            Swatch::Triangle(c) => area.draw(&TriangleMarker::new((19, y + 6), 6, c.filled()))?,
            Swatch::Cross(c) => area.draw(&Cross::new((19, y + 6), 5, c.stroke_width(2)))?,
        }
        area.draw(&Text::new(label.to_string(), (36, y), font.clone()))?;
    }
    Ok(())
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn stage_lines<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    report: &Report,
    samples: &[Sample],
    y_max: f64,
    labels: bool,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let mut current = -2;
    for s in samples {
        if s.stage != current && s.stage >= 0 {
            let x = s.t_ms / 1e3;
            chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, y_max)],
                BLACK.mix(0.3).stroke_width(1),
            ))?;
            if labels {
                let kind = report
                    .stages
                    .get(s.stage as usize)
                    .map_or("", |st| st.kind.as_str());
                chart.draw_series(std::iter::once(Text::new(
                    format!(" {} {kind}", s.stage),
                    (x, y_max * 0.97),
                    ("sans-serif", 13).into_font().color(&BLACK),
                )))?;
            }
        }
        current = s.stage;
    }
    Ok(())
}

fn timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    samples: &[Sample],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (plots, side) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(300));
    let (top, bottom) = plots.split_vertically((plots.dim_in_pixel().1 as f64 * 0.58) as u32);
    let l = &report.layout;
    let reserved = mib(l.reserved as u64);
    let user_top = reserved + mib(l.user as u64);
    let unified_top = user_top + mib(l.unified as u64);
    let off_top = unified_top + mib(l.off_heap as u64);
    let x_max = samples.last().map_or(1.0, |s| s.t_ms / 1e3).max(0.001);
    let s0 = samples;

    // Top: the regions at their layout boundaries.
    let y_max = off_top * 1.12;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "spillway: {} — regions at their layout boundaries (MiB)",
                report.scenario.name
            ),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .y_desc("MiB: heap from 0, off-heap above")
        .draw()?;
    band(&mut chart, s0, |_| 0.0, |_| reserved, RESERVED)?;
    band(
        &mut chart,
        s0,
        |_| reserved,
        |s| reserved + mib(s.user_used),
        USER,
    )?;
    band(
        &mut chart,
        s0,
        |_| user_top,
        |s| user_top + mib(s.on_heap_storage_used),
        STORAGE,
    )?;
    band(
        &mut chart,
        s0,
        |s| unified_top - mib(s.on_heap_execution_used),
        |_| unified_top,
        EXECUTION,
    )?;
    if l.off_heap > 0 {
        band(
            &mut chart,
            s0,
            |_| unified_top,
            |s| unified_top + mib(s.off_heap_storage_used),
            OFF_STORAGE,
        )?;
        band(
            &mut chart,
            s0,
            |s| off_top - mib(s.off_heap_execution_used),
            |_| off_top,
            OFF_EXECUTION,
        )?;
        hline(&mut chart, x_max, off_top, BLACK.stroke_width(1))?;
        // The off-heap pool boundary.
        chart.draw_series(LineSeries::new(
            s0.iter()
                .map(|s| (s.t_ms / 1e3, unified_top + mib(s.off_heap_storage_pool))),
            RGBColor(40, 40, 120).stroke_width(1),
        ))?;
    }
    for y in [reserved, user_top, unified_top] {
        hline(&mut chart, x_max, y, BLACK.stroke_width(1))?;
    }
    let region = user_top + mib(l.storage_region as u64);
    chart.draw_series(DashedLineSeries::new(
        [(0.0, region), (x_max, region)],
        6,
        4,
        STORAGE.stroke_width(2),
    ))?;
    chart.draw_series(LineSeries::new(
        s0.iter()
            .map(|s| (s.t_ms / 1e3, user_top + mib(s.on_heap_storage_pool))),
        RGBColor(40, 40, 120).stroke_width(2),
    ))?;
    let spill_y = off_top + (y_max - off_top) * 0.35;
    let evict_y = off_top + (y_max - off_top) * 0.65;
    chart.draw_series(
        s0.windows(2)
            .filter(|w| w[1].spills > w[0].spills)
            .map(|w| TriangleMarker::new((w[1].t_ms / 1e3, spill_y), 6, EXECUTION.filled())),
    )?;
    chart.draw_series(
        s0.windows(2)
            .filter(|w| w[1].evictions > w[0].evictions)
            .map(|w| Cross::new((w[1].t_ms / 1e3, evict_y), 5, STORAGE.stroke_width(2))),
    )?;
    stage_lines(&mut chart, report, s0, y_max, true)?;

    // Bottom: what the model accounts, stacked, against what is resident.
    let stack = |s: &Sample, upto: usize| -> f64 {
        let parts = [
            s.reserved,
            s.user_used,
            s.on_heap_storage_used,
            s.on_heap_execution_used,
            s.off_heap_storage_used,
            s.off_heap_execution_used,
        ];
        parts[..upto].iter().map(|&b| mib(b)).sum()
    };
    let y2 = s0
        .iter()
        .map(|s| mib(s.rss).max(stack(s, 6)))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "accounted memory (stacked) against resident memory (MiB)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y2)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("seconds since the executor started")
        .draw()?;
    let colors = [
        RESERVED,
        USER,
        STORAGE,
        EXECUTION,
        OFF_STORAGE,
        OFF_EXECUTION,
    ];
    for (i, c) in colors.iter().enumerate() {
        band(&mut chart, s0, |s| stack(s, i), |s| stack(s, i + 1), *c)?;
    }
    chart.draw_series(LineSeries::new(
        s0.iter().map(|s| (s.t_ms / 1e3, mib(s.rss))),
        BLACK.stroke_width(2),
    ))?;
    stage_lines(&mut chart, report, s0, y2, false)?;

    legend(
        &side,
        "legend",
        &[
            (
                Swatch::Fill(RESERVED),
                "reserved (300 MiB, touched at start)",
            ),
            (Swatch::Fill(USER), "user memory in use (UDF objects)"),
            (Swatch::Fill(STORAGE), "storage in use (blocks, unroll)"),
            (Swatch::Fill(EXECUTION), "execution in use (task pages)"),
            (Swatch::Fill(OFF_STORAGE), "off-heap storage in use"),
            (Swatch::Fill(OFF_EXECUTION), "off-heap execution in use"),
            (
                Swatch::Dashed(STORAGE),
                "storage region (immune to eviction)",
            ),
            (
                Swatch::Line(RGBColor(40, 40, 120)),
                "storage | execution pool boundary",
            ),
            (Swatch::Line(BLACK), "resident memory (RSS), lower plot"),
            (Swatch::Triangle(EXECUTION), "a task spilled to disk"),
            (Swatch::Cross(STORAGE), "a cached block was evicted"),
        ],
    )?;
    side.draw(&Text::new(
        "Top: storage fills the unified".to_string(),
        (10, 300),
        ("sans-serif", 13).into_font(),
    ))?;
    for (i, line) in [
        "pool from below, execution from",
        "above; the thick line is where",
        "they meet. Execution can push it",
        "down to the dashed line, not below.",
    ]
    .iter()
    .enumerate()
    {
        side.draw(&Text::new(
            line.to_string(),
            (10, 318 + 18 * i as i32),
            ("sans-serif", 13).into_font(),
        ))?;
    }
    Ok(())
}

fn spill_per_task<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let tasks = &report.tasks;
    let n = tasks.len().max(1);
    let y_max = tasks
        .iter()
        .map(|t| mib(t.memory_bytes_spilled.max(t.disk_bytes_spilled)))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "spillway: {} — bytes spilled per task",
                report.scenario.name
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("task (in run order; stage boundaries drawn)")
        .y_desc("MiB")
        .disable_x_mesh()
        .draw()?;
    chart
        .draw_series(tasks.iter().enumerate().map(|(i, t)| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.1, 0.0), (x + 0.5, mib(t.memory_bytes_spilled))],
                EXECUTION.filled(),
            )
        }))?
        .label("memoryBytesSpilled (in-memory size released)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], EXECUTION.filled()));
    chart
        .draw_series(tasks.iter().enumerate().map(|(i, t)| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.5, 0.0), (x + 0.9, mib(t.disk_bytes_spilled))],
                STORAGE.filled(),
            )
        }))?
        .label("diskBytesSpilled (bytes written)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], STORAGE.filled()));
    let mut prev_stage = u32::MAX;
    for (i, t) in tasks.iter().enumerate() {
        if t.stage_id != prev_stage {
            let x = i as f64;
            chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, y_max)],
                BLACK.mix(0.3).stroke_width(1),
            ))?;
            let kind = report
                .stages
                .get(t.stage_id as usize)
                .map_or("", |s| s.kind.as_str());
            chart.draw_series(std::iter::once(Text::new(
                format!("stage {} {kind}", t.stage_id),
                (x + 0.1, y_max * 0.96),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))?;
        }
        prev_stage = t.stage_id;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}
