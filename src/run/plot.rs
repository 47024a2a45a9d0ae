//! The run's pictures, as SVG and PNG:
//!
//! - `timeline`: the heap drawn as Spark's regions at their layout boundaries — reserved,
//!   user (filled as UDF objects take it), and the unified pool with storage filling from the
//!   bottom and execution from the top, the moving pool boundary between them and the fixed
//!   storage region (dashed) — then the off-heap arena above it the same way, the process's
//!   resident memory as a line, and markers where tasks spilled and blocks were evicted;
//! - `spill_per_task`: memory and disk bytes spilled by each task.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (`fonts/`, registered with plotters'
//! `register_font`), so drawing needs no system font and no fontconfig. Stage names go in rows
//! above each chart, laid out by [`labels`] so that they never overlap.

mod labels;

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

use crate::timeline::Sample;

use super::report::Report;

/// The files [`draw_all`] writes.
pub const FILES: [&str; 4] = [
    "timeline.svg",
    "timeline.png",
    "spill_per_task.svg",
    "spill_per_task.png",
];

type PlotResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// DejaVu Sans (licence in `fonts/LICENSE`), the family plotters knows as "sans-serif".
static SANS: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
static SANS_BOLD: &[u8] = include_bytes!("fonts/DejaVuSans-Bold.ttf");

/// Registers the embedded fonts with plotters, once per process; every plot needs them, the
/// SVG ones too (plotters measures text to place it).
fn register_fonts() -> PlotResult {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, SANS).is_ok()
            && register_font("sans-serif", FontStyle::Bold, SANS_BOLD).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font does not parse".into())
    }
}

/// Draws every plot into `out_dir`: each is drawn in memory and written with
/// `fsio::write_atomic`, so a run stopped mid-plot never leaves half a file.
pub fn draw_all(report: &Report, samples: &[Sample], out_dir: &Path) -> PlotResult {
    register_fonts()?;
    let paths: Vec<_> = FILES.iter().map(|f| out_dir.join(f)).collect();
    let size = (1400, 800);
    write_svg(&paths[0], size, |root| timeline(root, report, samples))?;
    write_png(&paths[1], size, |root| timeline(root, report, samples))?;
    let size = (1200, 600);
    write_svg(&paths[2], size, |root| spill_per_task(root, report))?;
    write_png(&paths[3], size, |root| spill_per_task(root, report))?;
    Ok(())
}

/// One SVG plot, drawn into a string and written atomically.
fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> PlotResult,
) -> PlotResult {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    crate::fsio::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// One PNG plot, drawn into an RGB buffer, encoded in memory and written atomically.
fn write_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> PlotResult,
) -> PlotResult {
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        width,
        height,
        image::ColorType::Rgb8,
    )?;
    crate::fsio::write_atomic(path, &png)?;
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
/// Shuffle fetch buffers: native memory outside the heap, part of the overhead.
const FETCH: RGBColor = RGBColor(120, 180, 90);

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
    starts: &[StageStart],
    y_max: f64,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    for start in starts {
        chart.draw_series(LineSeries::new(
            [(start.x, 0.0), (start.x, y_max)],
            BLACK.mix(0.3).stroke_width(1),
        ))?;
    }
    Ok(())
}

/// Where a stage starts on a chart's x axis, and its label.
struct StageStart {
    x: f64,
    label: String,
}

/// The stages in `samples`, where each first appears.
fn sample_stage_starts(report: &Report, samples: &[Sample]) -> Vec<StageStart> {
    let mut starts = Vec::new();
    let mut current = -2;
    for s in samples {
        if s.stage != current && s.stage >= 0 {
            let kind = report
                .stages
                .get(s.stage as usize)
                .map_or("", |st| st.kind.as_str());
            starts.push(StageStart {
                x: s.t_ms / 1e3,
                label: format!("{} {kind}", s.stage),
            });
        }
        current = s.stage;
    }
    starts
}

const LABEL_SIZE: f64 = 13.0;
/// Pixels per label row: the font size and room for descenders.
const LABEL_ROW: i32 = 16;
/// Pixels between a stage line and its label.
const LABEL_PAD: i32 = 3;

fn label_font() -> FontDesc<'static> {
    ("sans-serif", LABEL_SIZE).into_font()
}

/// Stage labels laid out for a chart whose plotting area starts `left` pixels into its strip
/// and is `width` pixels wide, over x values `0..x_max`.
struct StageLabels {
    texts: Vec<String>,
    placed: Vec<labels::Placed>,
}

impl StageLabels {
    fn new(starts: &[StageStart], x_max: f64, left: i32, width: i32) -> PlotResult<Self> {
        let font = label_font();
        let mut spans = Vec::with_capacity(starts.len());
        for start in starts {
            let (w, _) = font.box_size(&start.label)?;
            spans.push((left + x_pixel(start.x, x_max, width) + LABEL_PAD, w as i32));
        }
        Ok(Self {
            texts: starts.iter().map(|s| s.label.clone()).collect(),
            placed: labels::place(&spans, left + width),
        })
    }

    /// The strip's height in pixels.
    fn height(&self) -> u32 {
        (labels::rows(&self.placed) as i32 * LABEL_ROW + 4) as u32
    }

    /// Draws the labels into `strip`, row 0 at its bottom (nearest the chart).
    fn draw<DB: DrawingBackend>(&self, strip: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let bottom = strip.dim_in_pixel().1 as i32;
        let style = label_font().color(&BLACK);
        for (text, p) in self.texts.iter().zip(&self.placed) {
            let y = bottom - (p.row as i32 + 1) * LABEL_ROW;
            strip.draw(&Text::new(text.clone(), (p.x, y), style.clone()))?;
        }
        Ok(())
    }
}

/// The pixel offset of `x` in a plotting area `width` pixels wide over `0..x_max`, as plotters
/// maps it (so a label starts exactly on its stage line).
fn x_pixel(x: f64, x_max: f64, width: i32) -> i32 {
    (f64::from(width) * (x / x_max) + 1e-3).floor() as i32
}

/// Splits a chart's area (margins already taken) into its caption, the label strip and what is
/// left for the chart, whose y labels take `y_label_area` pixels on the left. Also returns the
/// pixel columns the labels assumed for the plotting area, for [`check_plotting_area`].
fn caption_and_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    caption_size: u32,
    starts: &[StageStart],
    x_max: f64,
    y_label_area: u32,
) -> PlotResult<(DrawingArea<DB, Shift>, Range<i32>)>
where
    DB::ErrorType: 'static,
{
    let below = area.titled(caption, ("sans-serif", caption_size))?;
    let left = y_label_area as i32;
    let width = below.dim_in_pixel().0 as i32 - left;
    let labels = StageLabels::new(starts, x_max, left, width)?;
    let (strip, chart) = below.split_vertically(labels.height());
    labels.draw(&strip)?;
    let x0 = below.get_base_pixel().0 + left;
    Ok((chart, x0..x0 + width))
}

/// The labels were placed for the plotting area `assumed`: the chart plotters built must have
/// it, or the labels would drift off their stage lines.
fn check_plotting_area<DB: DrawingBackend>(chart: &Chart<DB>, assumed: Range<i32>) {
    debug_assert_eq!(chart.plotting_area().get_pixel_range().0, assumed);
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
    let starts = sample_stage_starts(report, s0);
    let (area, assumed) = caption_and_labels(
        &top.margin(10, 10, 10, 10),
        &format!(
            "spillway: {} — regions at their layout boundaries (MiB)",
            report.scenario.name
        ),
        20,
        &starts,
        x_max,
        60,
    )?;
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    check_plotting_area(&chart, assumed);
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
    stage_lines(&mut chart, &starts, y_max)?;

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
    // Above the heap's parts: the shuffle fetch buffers in flight, native memory the model
    // does not account but the process holds (the overhead).
    let with_fetch = |s: &Sample| stack(s, 6) + mib(s.fetch_bytes_in_flight);
    let y2 = s0
        .iter()
        .map(|s| mib(s.rss).max(with_fetch(s)))
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
    band(&mut chart, s0, |s| stack(s, 6), with_fetch, FETCH)?;
    chart.draw_series(LineSeries::new(
        s0.iter().map(|s| (s.t_ms / 1e3, mib(s.rss))),
        BLACK.stroke_width(2),
    ))?;
    stage_lines(&mut chart, &starts, y2)?;

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
            (Swatch::Fill(FETCH), "shuffle fetch buffers (overhead)"),
            (
                Swatch::Dashed(STORAGE),
                "storage region (execution cannot evict below it)",
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

/// The stages in the report's tasks (in run order), where each stage's first task is.
fn task_stage_starts(report: &Report) -> Vec<StageStart> {
    let mut starts = Vec::new();
    let mut prev_stage = None;
    for (i, t) in report.tasks.iter().enumerate() {
        if prev_stage != Some(t.stage_id) {
            let kind = report
                .stages
                .get(t.stage_id as usize)
                .map_or("", |s| s.kind.as_str());
            starts.push(StageStart {
                x: i as f64,
                label: format!("stage {} {kind}", t.stage_id),
            });
        }
        prev_stage = Some(t.stage_id);
    }
    starts
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
    let starts = task_stage_starts(report);
    let (area, assumed) = caption_and_labels(
        &root.margin(15, 15, 15, 15),
        &format!(
            "spillway: {} — bytes spilled per task",
            report.scenario.name
        ),
        22,
        &starts,
        n as f64,
        70,
    )?;
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..y_max)?;
    check_plotting_area(&chart, assumed);
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
    stage_lines(&mut chart, &starts, y_max)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stage label's kind: every registered kind, and a long name for the worst case.
    fn kind_name(i: usize) -> &'static str {
        crate::stage::KINDS
            .get(i)
            .map_or("aggregate-with-a-long-name", |k| k.name)
    }

    proptest! {
        /// Stage spans as the plots see them (random start times, some stages a sample long,
        /// labels measured with the embedded font): the chosen label boxes, one row per
        /// `LABEL_ROW` pixels, never intersect, and each sits in the strip.
        #[test]
        fn stage_label_boxes_never_intersect(
            stages in prop::collection::vec((0.0f64..1.0, 0usize..=crate::stage::KINDS.len()), 1..40),
            x_max in 0.5f64..600.0,
            width in 300i32..1400,
        ) {
            register_fonts().expect("the embedded font parses");
            let mut times: Vec<f64> = stages.iter().map(|(t, _)| t * x_max).collect();
            times.sort_by(f64::total_cmp);
            let starts: Vec<StageStart> = times
                .iter()
                .zip(&stages)
                .enumerate()
                .map(|(i, (&x, (_, k)))| StageStart { x, label: format!("{i} {}", kind_name(*k)) })
                .collect();
            let labels = StageLabels::new(&starts, x_max, 60, width).expect("labels measure");
            let strip_height = labels.height() as i32;
            let boxes: Vec<(i32, i32, i32, i32)> = labels
                .placed
                .iter()
                .map(|p| {
                    let y = strip_height - (p.row as i32 + 1) * LABEL_ROW;
                    (p.x, y, p.x + p.width, y + LABEL_ROW)
                })
                .collect();
            for (i, a) in boxes.iter().enumerate() {
                prop_assert!(a.2 > a.0, "label {} measured empty", labels.texts[i]);
                prop_assert!(a.1 >= 0, "label {} above its strip", labels.texts[i]);
                for b in &boxes[..i] {
                    let overlap = a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
                    prop_assert!(!overlap, "{:?} and {:?} overlap", a, b);
                }
            }
        }
    }

    #[test]
    fn the_embedded_font_measures_text() {
        register_fonts().expect("the embedded font parses");
        let font = label_font();
        let (short, _) = font.box_size("1 udf").expect("measures");
        let (long, _) = font.box_size("1 udf and a longer tail").expect("measures");
        assert!(0 < short && short < long, "{short} vs {long}");
    }
}
