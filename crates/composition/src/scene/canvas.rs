//! A frame being drawn that remembers where it was drawn on.
//!
//! Every write into a frame goes through a [`Canvas`], which records a
//! conservative pixel bound ([`Damage`]) of each draw from the draw's own
//! arguments (the path, rectangle or pixmap, its transform, the stroke
//! width) before handing it to tiny-skia. A renderer that reuses its frame
//! buffer then only has to put the background back under the previous
//! frame's damage instead of copying the whole background.
//!
//! The bound holds because tiny-skia only writes pixels its rasteriser
//! covers (whatever the blend mode: blitters visit coverage spans only),
//! and coverage stays within the geometry's bounding box plus one pixel of
//! anti-aliasing; [`AA_MARGIN`] keeps two. A group composited as one image
//! draws a frame-sized pixmap, so its bound is the whole frame.

use tiny_skia::{FillRule, Mask, Paint, Path, PixmapMut, PixmapPaint, PixmapRef, Rect, Stroke};
use tiny_skia::{LineCap, LineJoin, Transform};

/// Pixels added around every transformed bound: tiny-skia's anti-aliasing
/// and hairlines reach at most one pixel past the geometry; the second
/// absorbs the difference between its `f32` transform and ours.
pub const AA_MARGIN: f64 = 2.0;

/// At most this many rectangles are kept per frame; past that, a new one is
/// merged into the rectangle it grows least (so a text's glyphs merge into
/// their line, not into a box spanning the frame from the last draw to
/// this one).
pub const MAX_RECTS: usize = 32;

/// A rectangle of pixels: columns `x0..x1`, rows `y0..y1`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    /// First column.
    pub x0: u32,
    /// First row.
    pub y0: u32,
    /// One past the last column.
    pub x1: u32,
    /// One past the last row.
    pub y1: u32,
}

impl PixelRect {
    /// The smallest rectangle holding both.
    fn union(self, o: PixelRect) -> PixelRect {
        PixelRect {
            x0: self.x0.min(o.x0),
            y0: self.y0.min(o.y0),
            x1: self.x1.max(o.x1),
            y1: self.y1.max(o.y1),
        }
    }

    fn area(self) -> u64 {
        u64::from(self.x1 - self.x0) * u64::from(self.y1 - self.y0)
    }

    fn overlaps(self, o: PixelRect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    fn contains(self, o: PixelRect) -> bool {
        self.x0 <= o.x0 && self.y0 <= o.y0 && self.x1 >= o.x1 && self.y1 >= o.y1
    }
}

/// Where a frame's draws may have changed pixels: nothing, some rectangles
/// (which may overlap), or the whole frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Damage {
    /// Every pixel may have changed; `rects` is then empty.
    whole: bool,
    rects: Vec<PixelRect>,
}

impl Damage {
    /// Whether nothing was drawn.
    pub fn is_empty(&self) -> bool {
        !self.whole && self.rects.is_empty()
    }

    /// Whether every pixel may have changed.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// The rectangles drawn in (empty when [`Damage::is_whole`]).
    pub fn rects(&self) -> &[PixelRect] {
        &self.rects
    }

    /// Every pixel of the frame.
    pub fn whole_frame() -> Damage {
        Damage {
            whole: true,
            rects: Vec::new(),
        }
    }

    /// Forgets every rectangle, keeping the allocation.
    pub fn clear(&mut self) {
        self.whole = false;
        self.rects.clear();
    }

    /// Adds everything `other` holds.
    pub fn extend(&mut self, other: &Damage) {
        if other.whole {
            self.set_whole();
        } else {
            for r in &other.rects {
                self.add(*r);
            }
        }
    }

    /// Whether a pixel may be in both.
    pub fn intersects(&self, other: &Damage) -> bool {
        match (self.whole, other.whole) {
            (true, _) => !other.is_empty(),
            (_, true) => !self.is_empty(),
            _ => self
                .rects
                .iter()
                .any(|a| other.rects.iter().any(|b| a.overlaps(*b))),
        }
    }

    /// Marks every pixel as changed.
    pub fn set_whole(&mut self) {
        self.whole = true;
        self.rects.clear();
    }

    /// Adds the pixels of `r` (in frame pixels; an empty rectangle adds
    /// nothing). At most 32 rectangles (`MAX_RECTS`) are kept: past that, `r`
    /// is merged into the one it grows least.
    pub fn add_rect(&mut self, r: PixelRect) {
        if r.x0 < r.x1 && r.y0 < r.y1 {
            self.add(r);
        }
    }

    fn add(&mut self, mut r: PixelRect) {
        if self.whole || self.rects.iter().any(|l| l.contains(r)) {
            return;
        }
        // A rectangle that overlaps another so much that their bounding box
        // is no bigger than the two apart becomes that box: a layer's
        // bounds on successive frames overlap almost wholly, and whoever
        // walks the rectangles (the restore, the YUV conversion) would
        // otherwise do the overlap twice.
        while let Some(i) = self
            .rects
            .iter()
            .position(|l| l.union(r).area() <= l.area() + r.area())
        {
            r = self.rects.swap_remove(i).union(r);
        }
        if self.rects.len() < MAX_RECTS {
            self.rects.push(r);
            return;
        }
        // Full: the first of the rectangles that grow least takes it.
        let growth = |l: &PixelRect| l.union(r).area() - l.area();
        if let Some(l) = self.rects.iter_mut().min_by_key(|l| growth(l)) {
            *l = l.union(r);
        }
    }

    /// Adds the pixels `rect` (layer space, grown by `outset` layer units on
    /// every side) covers under `tf`, plus [`AA_MARGIN`], clipped to a
    /// `width × height` frame. A bound that is not finite is the whole frame.
    fn add_transformed(&mut self, rect: Rect, outset: f64, tf: Transform, size: (u32, u32)) {
        if self.whole {
            return;
        }
        let (l, t) = (
            f64::from(rect.left()) - outset,
            f64::from(rect.top()) - outset,
        );
        let (r, b) = (
            f64::from(rect.right()) + outset,
            f64::from(rect.bottom()) + outset,
        );
        let (sx, kx, tx) = (f64::from(tf.sx), f64::from(tf.kx), f64::from(tf.tx));
        let (ky, sy, ty) = (f64::from(tf.ky), f64::from(tf.sy), f64::from(tf.ty));
        let (mut x_min, mut y_min) = (f64::INFINITY, f64::INFINITY);
        let (mut x_max, mut y_max) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (x, y) in [(l, t), (r, t), (l, b), (r, b)] {
            let (px, py) = (sx * x + kx * y + tx, ky * x + sy * y + ty);
            x_min = x_min.min(px);
            y_min = y_min.min(py);
            x_max = x_max.max(px);
            y_max = y_max.max(py);
        }
        if ![x_min, y_min, x_max, y_max].iter().all(|v| v.is_finite()) {
            self.set_whole();
            return;
        }
        let clamp = |v: f64, hi: u32| v.clamp(0.0, f64::from(hi)) as u32;
        let (w, h) = size;
        let rect = PixelRect {
            x0: clamp((x_min - AA_MARGIN).floor(), w),
            y0: clamp((y_min - AA_MARGIN).floor(), h),
            x1: clamp((x_max + AA_MARGIN).ceil(), w),
            y1: clamp((y_max + AA_MARGIN).ceil(), h),
        };
        if rect.x0 < rect.x1 && rect.y0 < rect.y1 {
            self.add(rect);
        }
    }
}

/// How far a stroke reaches outside its path, in layer units: half its
/// width, times the miter limit where corners may be mitred, times √2 where
/// square caps stick out diagonally. Generous on purpose: a larger bound only
/// costs a few more bytes copied.
fn stroke_outset(stroke: &Stroke) -> f64 {
    let half = f64::from(stroke.width.max(0.0)) / 2.0;
    let join = match stroke.line_join {
        LineJoin::Miter | LineJoin::MiterClip => f64::from(stroke.miter_limit).max(1.0),
        LineJoin::Round | LineJoin::Bevel => 1.0,
    };
    let cap = match stroke.line_cap {
        LineCap::Square => std::f64::consts::SQRT_2,
        LineCap::Butt | LineCap::Round => 1.0,
    };
    half * join.max(cap)
}

/// A frame (or an offscreen layer) and the [`Damage`] of what was drawn on
/// it: the only way the scene renderer writes pixels.
pub struct Canvas<'p> {
    pm: PixmapMut<'p>,
    damage: Damage,
    /// Only record where draws would go; change no pixel.
    measure: bool,
}

impl<'p> Canvas<'p> {
    /// A canvas over `pm` with nothing drawn yet, recording into `damage`
    /// (cleared first; passed in so its allocation is reused).
    pub fn new(pm: PixmapMut<'p>, mut damage: Damage) -> Canvas<'p> {
        damage.clear();
        Canvas {
            pm,
            damage,
            measure: false,
        }
    }

    /// A canvas over `pm` that records the [`Damage`] of every draw exactly
    /// as [`Canvas::new`] would, but draws nothing: where a layer is about
    /// to draw, before anything under it is repainted. (Offscreen layers a
    /// painter makes for itself are still drawn; only this canvas is left
    /// untouched.)
    pub fn measuring(pm: PixmapMut<'p>, mut damage: Damage) -> Canvas<'p> {
        damage.clear();
        Canvas {
            pm,
            damage,
            measure: true,
        }
    }

    /// What was drawn.
    pub fn into_damage(self) -> Damage {
        self.damage
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.pm.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.pm.height()
    }

    fn size(&self) -> (u32, u32) {
        (self.pm.width(), self.pm.height())
    }

    /// [`PixmapMut::fill_path`], recorded.
    pub fn fill_path(
        &mut self,
        path: &Path,
        paint: &Paint<'_>,
        rule: FillRule,
        tf: Transform,
        mask: Option<&Mask>,
    ) {
        let size = self.size();
        self.damage.add_transformed(path.bounds(), 0.0, tf, size);
        if !self.measure {
            self.pm.fill_path(path, paint, rule, tf, mask);
        }
    }

    /// [`PixmapMut::stroke_path`], recorded.
    pub fn stroke_path(
        &mut self,
        path: &Path,
        paint: &Paint<'_>,
        stroke: &Stroke,
        tf: Transform,
        mask: Option<&Mask>,
    ) {
        let size = self.size();
        self.damage
            .add_transformed(path.bounds(), stroke_outset(stroke), tf, size);
        if !self.measure {
            self.pm.stroke_path(path, paint, stroke, tf, mask);
        }
    }

    /// [`PixmapMut::fill_rect`], recorded.
    pub fn fill_rect(&mut self, rect: Rect, paint: &Paint<'_>, tf: Transform, mask: Option<&Mask>) {
        let size = self.size();
        self.damage.add_transformed(rect, 0.0, tf, size);
        if !self.measure {
            self.pm.fill_rect(rect, paint, tf, mask);
        }
    }

    /// [`PixmapMut::draw_pixmap`], recorded: the pixmap's rectangle at
    /// `(x, y)` under `tf`, as tiny-skia fills it.
    pub fn draw_pixmap(
        &mut self,
        x: i32,
        y: i32,
        pixmap: PixmapRef<'_>,
        paint: &PixmapPaint,
        tf: Transform,
        mask: Option<&Mask>,
    ) {
        let size = self.size();
        // An empty pixmap cannot exist; a rect that cannot be made is
        // recorded as the whole frame rather than skipped.
        match Rect::from_xywh(
            x as f32,
            y as f32,
            pixmap.width() as f32,
            pixmap.height() as f32,
        ) {
            Some(r) => self.damage.add_transformed(r, 0.0, tf, size),
            None => self.damage.set_whole(),
        }
        if !self.measure {
            self.pm.draw_pixmap(x, y, pixmap, paint, tf, mask);
        }
    }

    /// The frame's bytes for writing the pixels `rect` (clipped to the
    /// frame) directly, with the row stride; records `rect`. `None` on a
    /// [`Canvas::measuring`] canvas: the draw is recorded, nothing is to be
    /// written.
    pub fn pixels_mut(&mut self, rect: PixelRect) -> Option<(&mut [u8], usize)> {
        let (w, h) = self.size();
        let clipped = PixelRect {
            x0: rect.x0.min(w),
            y0: rect.y0.min(h),
            x1: rect.x1.min(w),
            y1: rect.y1.min(h),
        };
        if clipped.x0 < clipped.x1 && clipped.y0 < clipped.y1 {
            self.damage.add(clipped);
        }
        if self.measure {
            return None;
        }
        Some((self.pm.data_mut(), w as usize * 4))
    }
}

/// Puts `background` (a whole frame's bytes, or transparent black when
/// `None`) back into `rgba` under `damage`, row by row.
pub fn restore(rgba: &mut [u8], background: Option<&[u8]>, width: u32, damage: &Damage) {
    if damage.is_empty() {
        return;
    }
    if damage.is_whole() {
        match background {
            Some(bg) => rgba.copy_from_slice(bg),
            None => rgba.fill(0),
        }
        return;
    }
    let stride = width as usize * 4;
    for r in damage.rects() {
        let (c0, c1) = (r.x0 as usize * 4, r.x1 as usize * 4);
        for y in r.y0 as usize..r.y1 as usize {
            let row = y * stride;
            let dst = &mut rgba[row + c0..row + c1];
            match background {
                Some(bg) => dst.copy_from_slice(&bg[row + c0..row + c1]),
                None => dst.fill(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(rect: (f32, f32, f32, f32), outset: f64, tf: Transform) -> Damage {
        let mut d = Damage::default();
        let r = Rect::from_xywh(rect.0, rect.1, rect.2, rect.3).expect("rect");
        d.add_transformed(r, outset, tf, (100, 50));
        d
    }

    fn rect(x0: u32, y0: u32, x1: u32, y1: u32) -> PixelRect {
        PixelRect { x0, y0, x1, y1 }
    }

    #[test]
    fn bounds_round_outward_with_the_margin_and_clip_to_the_frame() {
        let d = bound((10.5, 5.0, 10.0, 4.0), 0.0, Transform::identity());
        assert_eq!(d.rects(), [rect(8, 3, 23, 11)]);
        // Half off the frame: clipped.
        let d = bound((-20.0, 40.0, 30.0, 30.0), 0.0, Transform::identity());
        assert_eq!(d.rects(), [rect(0, 38, 12, 50)]);
        // Wholly off the frame: nothing.
        let d = bound((200.0, 0.0, 10.0, 10.0), 0.0, Transform::identity());
        assert!(d.is_empty());
        // The outset is in layer units: scaled by 2.
        let d = bound((10.0, 10.0, 2.0, 2.0), 1.0, Transform::from_scale(2.0, 2.0));
        assert_eq!(d.rects(), [rect(16, 16, 28, 28)]);
        // Turned a quarter: x' = −y, y' = x.
        let quarter = Transform::from_row(0.0, 1.0, -1.0, 0.0, 0.0, 0.0);
        let d = bound((10.0, -30.0, 5.0, 20.0), 0.0, quarter);
        assert_eq!(d.rects(), [rect(8, 8, 32, 17)]);
        // Not finite: the whole frame.
        let d = bound(
            (0.0, 0.0, 1.0, 1.0),
            0.0,
            Transform::from_scale(f32::INFINITY, 4.0),
        );
        assert!(d.is_whole());
    }

    #[test]
    fn rects_merge_past_the_limit_and_whole_absorbs_everything() {
        let mut d = Damage::default();
        for i in 0..MAX_RECTS as u32 + 3 {
            d.add(rect(i, i, i + 1, i + 1));
        }
        assert_eq!(d.rects().len(), MAX_RECTS);
        let last = MAX_RECTS as u32 - 1;
        assert_eq!(
            d.rects()[MAX_RECTS - 1],
            rect(last, last, last + 4, last + 4)
        );
        // Rects that overlap so much that their box is no bigger than the
        // two apart become the box; others stay apart.
        let mut near = Damage::default();
        near.add(rect(10, 10, 20, 20));
        near.add(rect(11, 9, 21, 19));
        assert_eq!(near.rects(), [rect(10, 9, 21, 20)]);
        near.add(rect(19, 19, 30, 30));
        assert_eq!(near.rects().len(), 2);
        // Past the limit a rect joins the one it grows least, however
        // far back: a draw far away does not stretch the last rect to it.
        let mut far = Damage::default();
        for i in 0..MAX_RECTS as u32 - 1 {
            far.add(rect(2 * i, 0, 2 * i + 1, 1));
        }
        far.add(rect(1000, 500, 1010, 510));
        far.add(rect(0, 2, 1, 3));
        assert_eq!(far.rects()[0], rect(0, 0, 1, 3));
        assert_eq!(far.rects()[MAX_RECTS - 1], rect(1000, 500, 1010, 510));
        // Inside any kept rect: nothing to add.
        far.add(rect(0, 1, 1, 2));
        far.add(rect(1002, 502, 1003, 503));
        assert_eq!(far.rects()[1], rect(2, 0, 3, 1));
        assert_eq!(far.rects().len(), MAX_RECTS);
        // A rect inside the last one adds nothing.
        d.add(rect(last + 1, last + 1, last + 2, last + 2));
        assert_eq!(d.rects().len(), MAX_RECTS);
        d.set_whole();
        d.add(rect(0, 0, 1, 1));
        assert!(d.is_whole() && d.rects().is_empty());
    }

    #[test]
    fn restoring_puts_the_background_back_only_under_the_damage() {
        let (w, h) = (6u32, 4u32);
        let bg: Vec<u8> = (0..w * h * 4).map(|i| i as u8).collect();
        let mut frame = vec![255u8; bg.len()];
        let mut d = Damage::default();
        d.add(rect(1, 1, 3, 3));
        d.add(rect(2, 0, 4, 1));
        restore(&mut frame, Some(&bg), w, &d);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                let inside =
                    (1..3).contains(&x) && (1..3).contains(&y) || (2..4).contains(&x) && y == 0;
                let want = if inside {
                    &bg[i..i + 4]
                } else {
                    &[255u8; 4][..]
                };
                assert_eq!(&frame[i..i + 4], want, "pixel ({x}, {y})");
            }
        }
        restore(&mut frame, None, w, &d);
        assert_eq!(
            &frame[(w as usize + 1) * 4..(w as usize + 1) * 4 + 4],
            [0; 4]
        );
        d.set_whole();
        restore(&mut frame, Some(&bg), w, &d);
        assert_eq!(frame, bg);
    }

    #[test]
    fn strokes_reach_out_by_their_joins_and_caps() {
        let s = |join, cap| Stroke {
            width: 4.0,
            line_join: join,
            line_cap: cap,
            ..Stroke::default()
        };
        assert_eq!(stroke_outset(&s(LineJoin::Round, LineCap::Butt)), 2.0);
        assert_eq!(stroke_outset(&s(LineJoin::Miter, LineCap::Butt)), 8.0);
        let square = stroke_outset(&s(LineJoin::Bevel, LineCap::Square));
        assert!((square - 2.0 * std::f64::consts::SQRT_2).abs() < 1e-12);
    }
}
