//! Fonts from the bundle only, shaping with cosmic-text, glyph outlines as
//! `tiny-skia` paths and colour glyph rasters per unit of a text layer
//! (built once per prepared render).

use cosmic_text::{
    Align, Attrs, Buffer, Family, FontSystem, Metrics, Shaping, Style, Weight, Wrap, fontdb,
};

use super::colour_glyph::{self, ColourGlyph};
use super::guard::guard;
use super::load::{FontCheck, TextLayer};
use super::model::{AlignDoc, OverflowDoc, VAlignDoc};
use crate::CompositionError;

/// The most faces one font file may hold: a collection whose header claims
/// more is refused before fontdb reserves room for every face it claims.
pub const MAX_FACES_PER_FONT: u32 = 256;

/// The locale shaping runs with: fixed, so shaping never depends on the
/// machine's settings.
const LOCALE: &str = "en-US";

/// The bundle's fonts and nothing else: the database starts empty.
pub struct Fonts {
    pub system: FontSystem,
    /// Colour glyph rasters by face, glyph, font size (`f32` bits) and
    /// weight (a variable COLR font's glyphs follow it).
    rasters: std::collections::HashMap<(fontdb::ID, u16, u32, u16), colour_glyph::Raster>,
}

impl std::fmt::Debug for Fonts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fonts")
            .field("faces", &self.system.db().len())
            .finish()
    }
}

impl Fonts {
    /// Loads font files (already read) into an empty database.
    ///
    /// # Errors
    /// A message naming a file that holds no usable face.
    pub fn new(files: Vec<(String, Vec<u8>)>) -> Result<Fonts, String> {
        let mut db = fontdb::Database::new();
        for (name, data) in files {
            check_font(&name, &data)?;
            let before = db.len();
            db.load_font_data(data);
            if db.len() == before {
                return Err(format!(
                    "font `{name}` holds no usable face (not a TrueType/OpenType font?)"
                ));
            }
        }
        Ok(Fonts {
            system: FontSystem::new_with_locale_and_db(LOCALE.to_owned(), db),
            rasters: std::collections::HashMap::new(),
        })
    }

    /// Lays out `text` for `layer` (see [`shape`]); `ctx` names the layer
    /// in errors. A panic of the shaper becomes
    /// [`CompositionError::Crashed`], and the font system, whose caches the
    /// panic may have left half-updated, is rebuilt from its database.
    ///
    /// # Errors
    /// [`CompositionError`] for characters no font covers, or the panic.
    pub fn shape(
        &mut self,
        layer: &TextLayer,
        text: &str,
        split: &Split,
        ctx: &str,
    ) -> Result<Shaped, CompositionError> {
        match guard(
            || ctx.to_owned(),
            "text shaper",
            || shape(self, layer, text, split),
        ) {
            Ok(shaped) => shaped.map_err(|message| CompositionError::Invalid {
                context: ctx.to_owned(),
                message,
            }),
            Err(e) => {
                let db = self.system.db().clone();
                self.system = FontSystem::new_with_locale_and_db(LOCALE.to_owned(), db);
                Err(e)
            }
        }
    }

    fn faces(&self) -> Vec<String> {
        let db = self.system.db();
        let mut v: Vec<String> = db
            .faces()
            .map(|f| {
                let family = f.families.first().map(|(n, _)| n.as_str()).unwrap_or("?");
                let italic = if f.style == fontdb::Style::Normal {
                    ""
                } else {
                    " italic"
                };
                match weight_axis(db, f.id) {
                    Some((lo, hi)) => format!("{family} {lo}-{hi}{italic} (variable)"),
                    None => format!("{family} {}{italic}", f.weight.0),
                }
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl FontCheck for Fonts {
    fn check(&self, family: &str, weight: u16, italic: bool) -> Result<(), String> {
        let db = self.system.db();
        let found = db.faces().any(|f| {
            f.families.iter().any(|(n, _)| n == family)
                && (f.style != fontdb::Style::Normal) == italic
                && (f.weight.0 == weight
                    || weight_axis(db, f.id)
                        .is_some_and(|(lo, hi)| (lo..=hi).contains(&f32::from(weight))))
        });
        if found {
            return Ok(());
        }
        let faces = self.faces();
        Err(format!(
            "no face `{family}` weight {weight}{} in the bundle's fonts; they hold: {}",
            if italic { " italic" } else { "" },
            if faces.is_empty() {
                "nothing (list font files in `fonts`)".to_owned()
            } else {
                faces.join(", ")
            }
        ))
    }
}

/// Text laid out for drawing: its units (the whole text, or the lines,
/// words or characters an animation moves), each with its outlines and
/// colour glyphs in layer space.
#[derive(Debug, Default)]
pub struct Shaped {
    /// In reading order (logical order, also for right-to-left text).
    pub units: Vec<Unit>,
}

/// One unit of shaped text.
#[derive(Debug, Default)]
pub struct Unit {
    /// Glyph outlines in layer space (`None`: no outline, e.g. spaces).
    pub path: Option<tiny_skia::Path>,
    /// Colour glyphs (emoji), drawn over the outlines.
    pub colour: Vec<ColourGlyph>,
    /// The centre of the unit's line boxes: its scale and rotation pivot.
    pub pivot: [f32; 2],
    /// Where the unit's text starts in the laid-out text (bytes).
    pub start: usize,
}

/// How shaped text is split into units.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// One unit.
    Whole,
    /// One unit per laid-out line.
    Lines,
    /// A unit starts at each of these byte offsets (sorted); glyphs before
    /// the first belong to the first.
    At(Vec<usize>),
}

/// Lays out `text` for `layer` and returns its outlines and colour glyphs
/// in layer space, split into units by `split`.
///
/// # Errors
/// A message listing characters no bundle font covers, or naming a glyph a
/// font defines in a format Montage cannot draw.
pub fn shape(
    fonts: &mut Fonts,
    layer: &TextLayer,
    text: &str,
    split: &Split,
) -> Result<Shaped, String> {
    let Fonts {
        system: fs,
        rasters,
    } = fonts;
    let (mut buffer, fits) = layout(fs, layer, text, layer.font_size as f32);
    if layer.shrink_to_fit && !fits {
        buffer = shrink(fs, layer, text);
    }
    if layer.overflow == OverflowDoc::Ellipsis && !fits {
        buffer = ellipsize(fs, layer, text, layer.font_size as f32);
    }
    let total_h = check_covered(&buffer)?;
    let dy = match (layer.size, layer.valign) {
        (Some([_, h]), VAlignDoc::Middle) => (h as f32 - total_h) / 2.0,
        (Some([_, h]), VAlignDoc::Bottom) => h as f32 - total_h,
        _ => 0.0,
    };
    let foreground = {
        let c = layer.color.at(0.0);
        let k = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        ttf_parser::RgbaColor::new(k(c[0]), k(c[1]), k(c[2]), k(c[3]))
    };
    let mut units: Vec<(tiny_skia::PathBuilder, Unit, Option<[f32; 4]>)> = Vec::new();
    let unit_of = |start: usize, line: usize| match split {
        Split::Whole => 0,
        Split::Lines => line,
        Split::At(starts) => starts.partition_point(|&s| s <= start).saturating_sub(1),
    };
    let mut line_top = dy;
    for (line, run) in buffer.layout_runs().enumerate() {
        let top = line_top;
        line_top += run.line_height;
        for g in run.glyphs {
            let i = unit_of(g.start, line);
            while units.len() <= i {
                units.push((tiny_skia::PathBuilder::new(), Unit::default(), None));
            }
            let (pb, unit, bounds) = &mut units[i];
            if bounds.is_none() {
                unit.start = g.start;
            }
            unit.start = unit.start.min(g.start);
            let b = [g.x, top, g.x + g.w, top + run.line_height];
            *bounds = Some(match *bounds {
                None => b,
                Some(o) => [
                    o[0].min(b[0]),
                    o[1].min(b[1]),
                    o[2].max(b[2]),
                    o[3].max(b[3]),
                ],
            });
            let ox = g.x + g.font_size * g.x_offset;
            let oy = run.line_y + g.y - g.font_size * g.y_offset + dy;
            let pen = Pen {
                layer,
                foreground,
                origin: (ox, oy),
            };
            draw_glyph(fs, rasters, &pen, run.text, g, pb, unit)?;
        }
    }
    Ok(Shaped {
        units: units
            .into_iter()
            .map(|(pb, mut unit, b)| {
                unit.path = pb.finish();
                if let Some([x0, y0, x1, y1]) = b {
                    unit.pivot = [(x0 + x1) / 2.0, (y0 + y1) / 2.0];
                }
                unit
            })
            .collect(),
    })
}

/// How one glyph is placed: its layer, the colour COLR glyphs use as
/// foreground, and its origin in layer space.
struct Pen<'a> {
    layer: &'a TextLayer,
    foreground: ttf_parser::RgbaColor,
    origin: (f32, f32),
}

/// Draws glyph `g` of a run whose text is `text` into its unit: its outline
/// into `pb`, or its colour raster (made once per face, glyph, size and
/// weight, kept in `rasters`) into the unit's colour glyphs.
///
/// # Errors
/// A glyph the font defines in a form Montage cannot draw, naming the
/// characters and the font.
fn draw_glyph(
    fs: &FontSystem,
    rasters: &mut std::collections::HashMap<(fontdb::ID, u16, u32, u16), colour_glyph::Raster>,
    pen: &Pen<'_>,
    text: &str,
    g: &cosmic_text::LayoutGlyph,
    pb: &mut tiny_skia::PathBuilder,
    unit: &mut Unit,
) -> Result<(), String> {
    let (ox, oy) = pen.origin;
    let mut failed = None;
    fs.db().with_face_data(g.font_id, |data, index| {
        let Ok(mut face) = ttf_parser::Face::parse(data, index) else {
            return;
        };
        // A variable face is drawn at the weight asked for, as cosmic-text
        // shaped it (its advances follow the axis).
        let wght = ttf_parser::Tag::from_bytes(b"wght");
        if let Some(axis) = face.variation_axes().into_iter().find(|a| a.tag == wght) {
            let w = f32::from(pen.layer.weight).clamp(axis.min_value, axis.max_value);
            face.set_variation(wght, w);
        }
        let key = (
            g.font_id,
            g.glyph_id,
            g.font_size.to_bits(),
            pen.layer.weight,
        );
        let drawn = match rasters.get(&key) {
            Some(r) => Ok(colour_glyph::Drawn::Colour(r.clone())),
            None => colour_glyph::classify(&face, g.glyph_id, g.font_size, pen.foreground),
        };
        match drawn {
            Ok(colour_glyph::Drawn::Colour(r)) => {
                unit.colour.push(r.at(ox, oy));
                rasters.insert(key, r);
            }
            Ok(colour_glyph::Drawn::Outline) => {
                let scale = g.font_size / f32::from(face.units_per_em());
                let mut sink = Outline { pb, ox, oy, scale };
                let drawn = face
                    .outline_glyph(ttf_parser::GlyphId(g.glyph_id), &mut sink)
                    .is_some();
                let shown = text.get(g.start..g.end).unwrap_or("");
                let visible = shown
                    .chars()
                    .any(|c| !c.is_whitespace() && !c.is_control() && !is_invisible(c));
                if !drawn && visible && colour_glyph::has_colour_tables(&face) {
                    failed =
                        Some("it has neither an outline nor colour data at this size".to_owned());
                }
            }
            Err(why) => failed = Some(why),
        }
    });
    match failed {
        None => Ok(()),
        Some(why) => {
            let shown = text.get(g.start..g.end).unwrap_or("?");
            let font = font_name(fs, g.font_id);
            let codes: Vec<String> = shown
                .chars()
                .map(|c| format!("U+{:04X}", u32::from(c)))
                .collect();
            Err(format!(
                "`{shown}` ({}) in font `{font}` cannot be drawn: {why}",
                codes.join(" ")
            ))
        }
    }
}

/// The laid-out text's height, after checking that every character has a
/// glyph.
///
/// # Errors
/// A message listing the characters no bundle font covers.
fn check_covered(buffer: &Buffer) -> Result<f32, String> {
    let mut missing = std::collections::BTreeSet::new();
    let mut total_h = 0.0f32;
    for run in buffer.layout_runs() {
        total_h += run.line_height;
        for g in run.glyphs {
            if g.glyph_id == 0 {
                missing.extend(
                    run.text
                        .get(g.start..g.end)
                        .unwrap_or("")
                        .chars()
                        .filter(|c| !c.is_whitespace() && !c.is_control()),
                );
            }
        }
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|c| format!("`{c}` (U+{:04X})", u32::from(*c)))
            .collect();
        return Err(format!("no bundle font covers {}", list.join(", ")));
    }
    Ok(total_h)
}

/// Characters that draw nothing by design (joiners, variation selectors,
/// format controls): their glyphs may be empty in any font.
fn is_invisible(c: char) -> bool {
    matches!(u32::from(c), 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFE00..=0xFE0F | 0xFEFF | 0xE0000..=0xE0FFF | 0x00AD | 0x034F)
}

/// A face's family and file-independent name for errors.
fn font_name(fs: &FontSystem, id: fontdb::ID) -> String {
    fs.db()
        .face(id)
        .map(|f| {
            let family = f.families.first().map_or("?", |(n, _)| n.as_str());
            format!("{family} {}", f.weight.0)
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// The byte offsets where each word of `text` starts (Unicode word
/// boundaries; punctuation and spaces belong to the word before them).
pub fn word_starts(text: &str) -> Vec<usize> {
    use unicode_segmentation::UnicodeSegmentation;
    let mut v: Vec<usize> = text
        .split_word_bound_indices()
        .filter(|(_, w)| w.chars().any(char::is_alphanumeric))
        .map(|(i, _)| i)
        .collect();
    if v.first() != Some(&0) {
        v.insert(0, 0);
    }
    v
}

/// The byte offsets where each visible character (grapheme cluster: an
/// emoji sequence is one) of `text` starts; spaces belong to the character
/// before them.
pub fn character_starts(text: &str) -> Vec<usize> {
    use unicode_segmentation::UnicodeSegmentation;
    let mut v: Vec<usize> = text
        .grapheme_indices(true)
        .filter(|(_, g)| !g.chars().all(char::is_whitespace))
        .map(|(i, _)| i)
        .collect();
    if v.first() != Some(&0) {
        v.insert(0, 0);
    }
    v
}

/// The layout at the largest font size that fits the box, found by
/// bisection in a fixed number of steps, so the result is the same
/// everywhere. Below 1 px, 1 px it is.
fn shrink(fs: &mut FontSystem, layer: &TextLayer, text: &str) -> Buffer {
    let (mut lo, mut hi) = (1.0f32, layer.font_size as f32);
    let mut buffer = layout(fs, layer, text, lo).0;
    for _ in 0..14 {
        let mid = (lo + hi) / 2.0;
        let (b, ok) = layout(fs, layer, text, mid);
        if ok {
            lo = mid;
            buffer = b;
        } else {
            hi = mid;
        }
    }
    buffer
}

/// The longest start of `text` that, ended with `…`, fits the box: found
/// by bisection over its characters (at most 15 layouts, the same
/// everywhere). Nothing fits: `…` alone.
fn ellipsize(fs: &mut FontSystem, layer: &TextLayer, text: &str, size: f32) -> Buffer {
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let candidate = |k: usize| {
        let end = starts.get(k).copied().unwrap_or(text.len());
        format!("{}…", text[..end].trim_end())
    };
    // `lo` characters fit, `hi` do not (all of them did not).
    let (mut lo, mut hi) = (0usize, starts.len());
    let mut best = layout(fs, layer, &candidate(0), size).0;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let (b, ok) = layout(fs, layer, &candidate(mid), size);
        if ok {
            lo = mid;
            best = b;
        } else {
            hi = mid;
        }
    }
    best
}

fn layout(fs: &mut FontSystem, layer: &TextLayer, text: &str, size: f32) -> (Buffer, bool) {
    let line_h = size * layer.line_height as f32;
    let mut buffer = Buffer::new(fs, Metrics::new(size, line_h));
    let width = layer.size.map(|[w, _]| w as f32);
    buffer.set_wrap(if layer.wrap {
        Wrap::WordOrGlyph
    } else {
        Wrap::None
    });
    buffer.set_size(width, None);
    let attrs = Attrs::new()
        .family(Family::Name(&layer.family))
        .weight(Weight(layer.weight))
        .style(if layer.italic {
            Style::Italic
        } else {
            Style::Normal
        })
        .letter_spacing(layer.letter_spacing as f32 / size);
    let align = match layer.align {
        AlignDoc::Left => Align::Left,
        AlignDoc::Center => Align::Center,
        AlignDoc::Right => Align::Right,
    };
    buffer.set_text(text, &attrs, Shaping::Advanced, Some(align));
    buffer.shape_until_scroll(fs, false);
    let fits = match layer.size {
        None => true,
        Some([w, h]) => {
            let mut total = 0.0f32;
            let mut widest = 0.0f32;
            for run in buffer.layout_runs() {
                total += run.line_height;
                widest = widest.max(run.line_w);
            }
            widest <= w as f32 + 0.01 && total <= h as f32 + 0.01
        }
    };
    (buffer, fits)
}

struct Outline<'a> {
    pb: &'a mut tiny_skia::PathBuilder,
    ox: f32,
    oy: f32,
    scale: f32,
}

impl Outline<'_> {
    fn p(&self, x: f32, y: f32) -> (f32, f32) {
        (self.ox + x * self.scale, self.oy - y * self.scale)
    }
}

impl ttf_parser::OutlineBuilder for Outline<'_> {
    fn move_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.p(x, y);
        self.pb.move_to(x, y);
    }
    fn line_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.p(x, y);
        self.pb.line_to(x, y);
    }
    fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
        let (x1, y1) = self.p(x1, y1);
        let (x, y) = self.p(x, y);
        self.pb.quad_to(x1, y1, x, y);
    }
    fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
        let (x1, y1) = self.p(x1, y1);
        let (x2, y2) = self.p(x2, y2);
        let (x, y) = self.p(x, y);
        self.pb.cubic_to(x1, y1, x2, y2, x, y);
    }
    fn close(&mut self) {
        self.pb.close();
    }
}

/// The `wght` axis of a variable face: its smallest and largest weight.
fn weight_axis(db: &fontdb::Database, id: fontdb::ID) -> Option<(f32, f32)> {
    db.with_face_data(id, |data, index| {
        let face = ttf_parser::Face::parse(data, index).ok()?;
        face.variation_axes()
            .into_iter()
            .find(|a| a.tag == ttf_parser::Tag::from_bytes(b"wght"))
            .map(|a| (a.min_value, a.max_value))
    })
    .flatten()
}

/// Checks every face of a font file the way fontdb will (it parses, has a
/// family name and a PostScript name), so that a bad file is refused with
/// our error instead of fontdb skipping the face with a logged warning.
fn check_font(name: &str, data: &[u8]) -> Result<(), String> {
    let faces = ttf_parser::fonts_in_collection(data).unwrap_or(1);
    if faces == 0 || faces > MAX_FACES_PER_FONT {
        return Err(format!(
            "font `{name}` is a collection of {faces} faces: 1-{MAX_FACES_PER_FONT} allowed"
        ));
    }
    for index in 0..faces {
        if let Err(why) = check_face(data, index) {
            return Err(if faces == 1 {
                format!("font `{name}` holds no usable face (not a TrueType/OpenType font?): {why}")
            } else {
                format!("font `{name}`: face {index} of {faces} is not usable: {why}")
            });
        }
    }
    Ok(())
}

/// What fontdb 0.23 requires of a face (`parse_face_info`), and that
/// ttf-parser, which draws the glyphs, can read it.
fn check_face(data: &[u8], index: u32) -> Result<(), String> {
    use ttf_parser::name_id;
    let face = ttf_parser::Face::parse(data, index).map_err(|e| e.to_string())?;
    // Unicode names that decode, or Mac Roman ones (fontdb maps every byte).
    let readable = |n: &ttf_parser::name::Name| {
        n.to_string().is_some()
            || (n.platform_id == ttf_parser::PlatformId::Macintosh && n.encoding_id == 0)
    };
    let names = face.names();
    let family = names.into_iter().any(|n| {
        (n.name_id == name_id::TYPOGRAPHIC_FAMILY || n.name_id == name_id::FAMILY) && readable(&n)
    });
    if !family {
        return Err("it has no family name".into());
    }
    let post_script = names
        .into_iter()
        .any(|n| n.name_id == name_id::POST_SCRIPT_NAME && readable(&n));
    if !post_script {
        return Err("it has no PostScript name".into());
    }
    Ok(())
}
