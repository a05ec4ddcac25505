//! Fonts from the bundle only, shaping with cosmic-text, glyph outlines as
//! one `tiny-skia` path per text layer (built once per prepared render).

use cosmic_text::{
    Align, Attrs, Buffer, Family, FontSystem, Metrics, Shaping, Style, Weight, Wrap, fontdb,
};

use super::guard::guard;
use super::load::{FontCheck, TextLayer};
use super::model::{AlignDoc, VAlignDoc};
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
        ctx: &str,
    ) -> Result<Option<tiny_skia::Path>, CompositionError> {
        match guard(
            || ctx.to_owned(),
            "text shaper",
            || shape(self, layer, text),
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
        let mut v: Vec<String> = self
            .system
            .db()
            .faces()
            .map(|f| {
                let family = f.families.first().map(|(n, _)| n.as_str()).unwrap_or("?");
                let italic = if f.style == fontdb::Style::Normal {
                    ""
                } else {
                    " italic"
                };
                format!("{family} {}{italic}", f.weight.0)
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl FontCheck for Fonts {
    fn check(&self, family: &str, weight: u16, italic: bool) -> Result<(), String> {
        let found = self.system.db().faces().any(|f| {
            f.families.iter().any(|(n, _)| n == family)
                && f.weight.0 == weight
                && (f.style != fontdb::Style::Normal) == italic
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

/// Lays out `text` for `layer` and returns its outlines in layer space
/// (`None` for text that draws nothing, such as spaces).
///
/// # Errors
/// A message listing characters no bundle font covers.
pub fn shape(
    fonts: &mut Fonts,
    layer: &TextLayer,
    text: &str,
) -> Result<Option<tiny_skia::Path>, String> {
    let fs = &mut fonts.system;
    let (mut buffer, fits) = layout(fs, layer, text, layer.font_size as f32);
    if layer.shrink_to_fit && !fits {
        // Bisect for the largest size that fits: a fixed number of steps,
        // so the result is the same everywhere. Below 1 px, 1 px it is.
        let (mut lo, mut hi) = (1.0f32, layer.font_size as f32);
        buffer = layout(fs, layer, text, lo).0;
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
    }
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
    let dy = match (layer.size, layer.valign) {
        (Some([_, h]), VAlignDoc::Middle) => (h as f32 - total_h) / 2.0,
        (Some([_, h]), VAlignDoc::Bottom) => h as f32 - total_h,
        _ => 0.0,
    };
    let mut pb = tiny_skia::PathBuilder::new();
    for run in buffer.layout_runs() {
        for g in run.glyphs {
            let ox = g.x + g.font_size * g.x_offset;
            let oy = run.line_y + g.y - g.font_size * g.y_offset + dy;
            fs.db().with_face_data(g.font_id, |data, index| {
                if let Ok(face) = ttf_parser::Face::parse(data, index) {
                    let scale = g.font_size / f32::from(face.units_per_em());
                    let mut sink = Outline {
                        pb: &mut pb,
                        ox,
                        oy,
                        scale,
                    };
                    face.outline_glyph(ttf_parser::GlyphId(g.glyph_id), &mut sink);
                }
            });
        }
    }
    Ok(pb.finish())
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
