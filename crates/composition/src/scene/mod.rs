//! The declarative scene format: a bundle folder holding `scene.json` and
//! the fonts, images and audio it uses, rendered natively and
//! deterministically.
//!
//! [`SceneBundle::open`] reads and validates the whole scene up front (every
//! error names the file, the JSON path or layer path); the bundle is a
//! [`CompositionSource`] holding one or more compositions and is cheap to
//! clone and share across threads. The format is documented in
//! `docs/scene-format.md`, its JSON Schema is `docs/scene.schema.json`.
//!
//! Props whose key contains a dot are overrides by path
//! (`text.Title Card.Headline`, `image.Logo`, `visible.Badge`,
//! `color.Background`, `transform.Logo.position`, `transform.Logo.scale`,
//! `opacity.Title`); the others fill `{name}` placeholders.
//!
//! ```
//! use composition::{CompositionSource, Props, scene::SceneBundle};
//! use timebase::FrameIndex;
//!
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo");
//! let bundle = SceneBundle::open(&dir)?;
//! let mut props = Props::new();
//! props.insert("name".into(), "Grace".into());
//! let prepared = bundle.composition("promo")?.prepare(&props)?;
//! let mut rgba = vec![0u8; prepared.meta().frame_bytes()];
//! prepared.frame_renderer()?.render_frame(FrameIndex(45), &mut rgba)?;
//! # Ok::<(), composition::CompositionError>(())
//! ```

mod anim;
mod assets;
mod audio;
mod audio_file;
pub mod blit;
mod budget;
pub(crate) mod canvas;
mod captions;
mod colour;
mod colour_glyph;
mod guard;
mod image;
pub mod limits;
mod load;
pub mod model;
mod mp4;
mod number;
mod overrides;
mod render;
mod resample;
mod template;
mod text;
mod text_fx;
mod video;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use timebase::{FrameIndex, SampleSpan};
use tiny_skia::{Pixmap, PixmapMut, Transform};

use canvas::{Canvas, Damage};

pub use anim::{Easing, MAX_BEZIER_Y};
pub use audio_file::{BLOCK_FRAMES, MAX_AUDIO_SECONDS, PREROLL_FRAMES};
pub use budget::{GLYPH_OUTLINE_BYTES, MAX_FRAME_BUFFER_BYTES, MAX_IMAGE_BYTES, MAX_SHAPED_GLYPHS};
pub use image::{MAX_IMAGE_PIXELS, MAX_SVG_BYTES};
pub use load::{MAX_GROUP_DEPTH, MAX_LAYERS, MAX_TEXT_CHARS};
pub use template::{Template, suggest};
pub use text::MAX_FACES_PER_FONT;
pub use video::{
    Cursor, DECODER_FRAMES, FrameTimes, KEPT_FRAMES, MAX_DECODE_AHEAD_SECONDS, MAX_PLAYBACK_RATE,
    MAX_VIDEO_DIMENSION, MAX_VIDEO_PIXELS, MIN_PLAYBACK_RATE, RATE_DEN, Time, Timing,
    VideoDecoders, VideoInfo, VideoSource, VideoStream,
};

use crate::{
    Composition, CompositionError, CompositionMeta, CompositionSource, FrameRenderer, Prepared,
    Props, RenderBudget, check_audio_buffer, check_frame_buffer,
};
use guard::guard;
use load::{Comp, Count, Kind, Layer};

/// The scene document's file name inside a bundle.
pub const SCENE_FILE: &str = "scene.json";

/// The largest scene document accepted, in bytes.
pub const MAX_SCENE_BYTES: u64 = 16 << 20;

/// The JSON Schema of `scene.json`, generated from the format's types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(model::SceneDoc))
        .expect("a generated schema is valid JSON")
}

/// A scene bundle: a folder with `scene.json` and its assets. Cloning is
/// cheap (an `Arc`); the bundle is shared by every render of its
/// compositions, which share its decoded images, audio and fonts.
#[derive(Clone, Debug)]
pub struct SceneBundle {
    inner: Arc<BundleInner>,
}

#[derive(Debug)]
struct BundleInner {
    root: PathBuf,
    compositions: BTreeMap<String, Arc<SceneComposition>>,
}

/// A decoded image's file and size.
type ImageKey = (PathBuf, (u32, u32));

/// What the compositions of one bundle share.
#[derive(Debug)]
struct Shared {
    root: PathBuf,
    fonts: Mutex<text::Fonts>,
    /// Decoded images by path and size ((0, 0): as decoded).
    images: Mutex<HashMap<ImageKey, Arc<Pixmap>>>,
    /// Audio files opened (headers read; blocks decoded on demand).
    audio: Mutex<HashMap<PathBuf, Arc<audio_file::AudioFile>>>,
    /// What decodes video layers; `None`: video layers are refused.
    video: Option<Arc<dyn VideoDecoders>>,
    /// Video files opened (headers read).
    videos: Mutex<HashMap<PathBuf, Arc<dyn VideoSource>>>,
    /// Static backgrounds that no prop or override can change, by
    /// composition and number of layers: drawn once for every variant of a
    /// batch instead of once per renderer.
    backgrounds: Mutex<HashMap<(String, usize), Background>>,
}

/// A static background, drawn by the first renderer that needs it and
/// shared by the others.
type Background = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

/// One composition of a scene bundle.
#[derive(Debug)]
pub struct SceneComposition {
    comp: Comp,
    shared: Arc<Shared>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves the cache consistent (values
    // are inserted whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SceneBundle {
    /// Opens the bundle in `dir`: reads `scene.json`, loads the fonts,
    /// validates every composition, and, for those whose props all have
    /// defaults, prepares them once with the defaults so that missing assets,
    /// undecodable images and uncovered characters are found now.
    ///
    /// # Errors
    /// [`CompositionError`] naming the file, JSON path or layer path.
    pub fn open(dir: &Path) -> Result<SceneBundle, CompositionError> {
        Self::open_inner(dir, None)
    }

    /// Opens the bundle as [`SceneBundle::open`] does, decoding its video
    /// layers with `video` (without one, a video layer is refused).
    ///
    /// # Errors
    /// [`CompositionError`] naming the file, JSON path or layer path.
    pub fn open_with_video(
        dir: &Path,
        video: Arc<dyn VideoDecoders>,
    ) -> Result<SceneBundle, CompositionError> {
        Self::open_inner(dir, Some(video))
    }

    fn open_inner(
        dir: &Path,
        video: Option<Arc<dyn VideoDecoders>>,
    ) -> Result<SceneBundle, CompositionError> {
        let root = dir.canonicalize().map_err(|e| CompositionError::Invalid {
            context: dir.display().to_string(),
            message: format!("cannot open the bundle folder: {e}"),
        })?;
        let scene_path = assets::resolve_path(&root, SCENE_FILE, &root.display().to_string())?;
        let bytes = assets::read_file(&scene_path, SCENE_FILE, SCENE_FILE)?;
        if bytes.len() as u64 > MAX_SCENE_BYTES {
            return Err(CompositionError::Invalid {
                context: SCENE_FILE.into(),
                message: format!("larger than {MAX_SCENE_BYTES} bytes"),
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let doc: model::SceneDoc = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            CompositionError::Invalid {
                context: if path == "." {
                    SCENE_FILE.to_owned()
                } else {
                    format!("{SCENE_FILE}: {path}")
                },
                message: e.into_inner().to_string(),
            }
        })?;
        Self::from_doc(root, &doc, video)
    }

    fn from_doc(
        root: PathBuf,
        doc: &model::SceneDoc,
        video: Option<Arc<dyn VideoDecoders>>,
    ) -> Result<SceneBundle, CompositionError> {
        if doc.version != 1 {
            return Err(CompositionError::Invalid {
                context: format!("{SCENE_FILE}: version"),
                message: format!(
                    "version {} is not supported: this renderer reads version 1",
                    doc.version
                ),
            });
        }
        let mut font_files = Vec::with_capacity(doc.fonts.len());
        for (i, f) in doc.fonts.iter().enumerate() {
            let ctx = format!("{SCENE_FILE}: fonts[{i}]");
            let path = assets::resolve_path(&root, f, &ctx)?;
            font_files.push((f.clone(), assets::read_file(&path, f, &ctx)?));
        }
        let fctx = format!("{SCENE_FILE}: fonts");
        let fonts = guard(
            || fctx.clone(),
            "font loader",
            || text::Fonts::new(font_files),
        )?
        .map_err(|m| CompositionError::Invalid {
            context: fctx.clone(),
            message: m,
        })?;
        let mut comps = Vec::with_capacity(doc.compositions.len());
        for (i, c) in doc.compositions.iter().enumerate() {
            let file = format!("{SCENE_FILE}: compositions[{i}]");
            comps.push(load::composition(c, &file, &fonts)?);
        }
        if comps.is_empty() {
            return Err(CompositionError::Invalid {
                context: format!("{SCENE_FILE}: compositions"),
                message: "a bundle needs at least one composition".into(),
            });
        }
        let shared = Arc::new(Shared {
            root: root.clone(),
            fonts: Mutex::new(fonts),
            images: Mutex::new(HashMap::new()),
            audio: Mutex::new(HashMap::new()),
            video,
            videos: Mutex::new(HashMap::new()),
            backgrounds: Mutex::new(HashMap::new()),
        });
        let mut compositions = BTreeMap::new();
        for comp in comps {
            let id = comp.id.clone();
            let sc = Arc::new(SceneComposition {
                comp,
                shared: shared.clone(),
            });
            if sc.comp.props.values().all(|v| !v.is_null()) {
                sc.prepare_scene(&Props::new())?;
            } else {
                // Required props are unknown until a render: check what
                // does not depend on them.
                let mut layers = sc.comp.layers.clone();
                let images = sc.image_bytes(&layers, None, &sc.comp.ctx)?;
                budget::check_images(images, &sc.comp.ctx)?;
                sc.load_layers(&mut layers, None, &sc.comp.ctx)?;
                for t in &sc.comp.audio {
                    if let Some(src) = t.src.literal() {
                        sc.load_audio(&src, &format!("{}: audio `{}`", sc.comp.ctx, t.name))?;
                    }
                }
            }
            if compositions.insert(id.clone(), sc).is_some() {
                return Err(CompositionError::DuplicateId { id });
            }
        }
        Ok(SceneBundle {
            inner: Arc::new(BundleInner { root, compositions }),
        })
    }

    /// The bundle's folder (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The override paths a composition accepts (`text.Title`, …), sorted.
    ///
    /// # Errors
    /// [`CompositionError::UnknownComposition`] for an unknown id.
    pub fn override_paths(&self, id: &str) -> Result<Vec<String>, CompositionError> {
        Ok(overrides::paths(&self.scene_composition(id)?.comp))
    }

    /// The props a composition declares, with their defaults (`null`: the
    /// prop is required). A batch reads it to give a spreadsheet cell the
    /// type of its prop's default.
    ///
    /// # Errors
    /// [`CompositionError::UnknownComposition`] for an unknown id.
    pub fn declared_props(&self, id: &str) -> Result<Props, CompositionError> {
        let comp = &self.scene_composition(id)?.comp;
        Ok(comp
            .props
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// The composition with this id, as its concrete type.
    ///
    /// # Errors
    /// [`CompositionError::UnknownComposition`] listing the ids available.
    pub fn scene_composition(&self, id: &str) -> Result<Arc<SceneComposition>, CompositionError> {
        self.inner.compositions.get(id).cloned().ok_or_else(|| {
            CompositionError::UnknownComposition {
                id: id.to_owned(),
                available: self.ids(),
            }
        })
    }
}

impl CompositionSource for SceneBundle {
    fn ids(&self) -> Vec<String> {
        self.inner.compositions.keys().cloned().collect()
    }

    fn composition(&self, id: &str) -> Result<Arc<dyn Composition>, CompositionError> {
        Ok(self.scene_composition(id)?)
    }
}

impl SceneComposition {
    /// Splits props into template props and overrides, merges defaults,
    /// applies overrides, resolves the duration and counts what rendering
    /// needs, refusing what is over the limits.
    fn resolve(&self, props: &Props) -> Result<Resolved, CompositionError> {
        let c = &self.comp;
        let (merged, overrides) = self.split_props(props)?;
        let mut comp = c.clone();
        for (k, v) in &overrides {
            overrides::apply(&mut comp, k, v)?;
        }
        let duration = match &comp.duration {
            Count::Number(n) => *n,
            Count::Template(t) => {
                let s = t.fill(&merged, &format!("{}: `duration`", c.ctx))?;
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| CompositionError::Invalid {
                        context: format!("{}: duration", c.ctx),
                        message: format!("`{s}` is not a whole number of frames"),
                    })?
            }
        };
        let overridden: Vec<String> = overrides.iter().map(|(k, _)| (*k).clone()).collect();
        let mut all = merged;
        for (k, v) in overrides {
            all.insert(k.clone(), v.clone());
        }
        let meta = CompositionMeta {
            id: c.id.clone(),
            width: c.width,
            height: c.height,
            fps: c.fps,
            duration_frames: duration,
            has_audio: !c.audio.is_empty() || !video::sounding(&comp.layers).is_empty(),
            props: all,
            version: crate::SCENE_VERSION.to_owned(),
        };
        meta.validate()?;
        let budget = frame_and_text_budget(&comp, &meta)?;
        Ok(Resolved {
            comp,
            meta,
            budget,
            overridden,
        })
    }

    /// The declared props, defaults merged in, and the overrides (keys with
    /// a dot).
    fn split_props<'p>(
        &self,
        props: &'p Props,
    ) -> Result<(Props, Vec<Override<'p>>), CompositionError> {
        let c = &self.comp;
        let mut merged = Props::new();
        let mut overrides = Vec::new();
        for (k, v) in props {
            if k.contains('.') {
                overrides.push((k, v));
            } else if c.props.contains_key(k) {
                merged.insert(k.clone(), v.clone());
            } else {
                return Err(CompositionError::Invalid {
                    context: format!("{}: prop `{k}`", c.ctx),
                    message: format!(
                        "not a declared prop{}; declared: {}",
                        template::suggest(k, c.props.keys().map(String::as_str)),
                        if c.props.is_empty() {
                            "none".to_owned()
                        } else {
                            c.props
                                .keys()
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                });
            }
        }
        for (k, default) in &c.props {
            if !merged.contains_key(k) {
                if default.is_null() {
                    return Err(CompositionError::MissingProp {
                        name: k.clone(),
                        needed_by: format!("composition `{}`", c.id),
                    });
                }
                merged.insert(k.clone(), default.clone());
            }
        }
        Ok((merged, overrides))
    }

    /// Bytes of the decoded images `layers` use (reduced copies included),
    /// from the images already decoded or their files' headers.
    /// With `props` `None` (props not known yet) only images without
    /// placeholders count.
    fn image_bytes(
        &self,
        layers: &[Layer],
        props: Option<&Props>,
        ctx: &str,
    ) -> Result<u64, CompositionError> {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0u64;
        let mut images = Vec::new();
        image_layers(layers, &mut images);
        for (path, img) in images {
            let lctx = format!("{ctx}: layer `{path}`");
            let src = match (props, img.src.literal()) {
                (Some(props), _) => img.src.fill(props, &format!("layer `{path}`"))?,
                (None, Some(src)) => src,
                (None, None) => continue,
            };
            let file = assets::resolve_path(&self.shared.root, &src, &lctx)?;
            let shown = img.size.map(|b| (b, img.fit));
            let (w, h) = guard(
                || lctx.clone(),
                "image decoder",
                || image::probe(&file, &src, &lctx, shown),
            )??
            .size;
            let mut sizes = vec![(w, h)];
            if let Some(b) = img.size {
                sizes.extend(image::reduced_size((w, h), b, img.fit));
            }
            for size in sizes {
                if seen.insert((file.clone(), size)) {
                    total = total.saturating_add(u64::from(size.0) * u64::from(size.1) * 4);
                }
            }
        }
        Ok(total)
    }

    fn prepare_scene(&self, props: &Props) -> Result<PreparedScene, CompositionError> {
        let Resolved {
            mut comp,
            meta,
            overridden,
            ..
        } = self.resolve(props)?;
        let ctx = comp.ctx.clone();
        budget::check_images(
            self.image_bytes(&comp.layers, Some(&meta.props), &ctx)?,
            &ctx,
        )?;
        self.load_layers(&mut comp.layers, Some(&meta.props), &ctx)?;
        let mut tracks = Vec::with_capacity(comp.audio.len());
        for t in &comp.audio {
            tracks.push(self.place_track(t, &meta, &ctx)?);
        }
        tracks.extend(self.video_sounds(&comp.layers, &meta, &ctx)?);
        let static_prefix = comp
            .layers
            .iter()
            .take_while(|l| render::is_static(l, meta.duration_frames))
            .count();
        let depth = render::composited_depth(&comp.layers);
        let settles = comp.layers[static_prefix..]
            .iter()
            .map(render::settles_at)
            .collect();
        let background =
            if static_prefix > 0 && template_free(&comp.layers[..static_prefix], &overridden) {
                lock(&self.shared.backgrounds)
                    .entry((comp.id.clone(), static_prefix))
                    .or_default()
                    .clone()
            } else {
                Background::default()
            };
        Ok(PreparedScene {
            inner: Arc::new(PreparedInner {
                meta,
                layers: comp.layers,
                static_prefix,
                settles,
                background,
                depth,
                tracks,
            }),
        })
    }

    /// Shapes text and loads images. With `props` `None` (props not known
    /// yet) only text and paths without placeholders are done.
    fn load_layers(
        &self,
        layers: &mut [Layer],
        props: Option<&Props>,
        ctx: &str,
    ) -> Result<(), CompositionError> {
        let empty = Props::new();
        for l in layers {
            let lctx = format!("{ctx}: layer `{}`", l.path);
            match &mut l.kind {
                Kind::Text(t) => {
                    if props.is_none() && t.template.props().next().is_some() {
                        continue;
                    }
                    let text = match &t.text_override {
                        Some(s) => s.clone(),
                        None => t
                            .template
                            .fill(props.unwrap_or(&empty), &format!("layer `{}`", l.path))?,
                    };
                    if t.captions.is_none() && text.chars().count() > MAX_TEXT_CHARS {
                        return Err(CompositionError::Invalid {
                            context: lctx,
                            message: format!("text is longer than {MAX_TEXT_CHARS} characters"),
                        });
                    }
                    if t.captions.is_some() {
                        self.load_captions(t, &text, &lctx)?;
                    } else {
                        let split = text_fx::split(&t.fx, &text);
                        let shaped = lock(&self.shared.fonts).shape(t, &text, &split, &lctx)?;
                        t.shaped = Some(Arc::new(shaped));
                    }
                }
                Kind::Image(img) => {
                    if props.is_none() && img.src.props().next().is_some() {
                        continue;
                    }
                    let src = img
                        .src
                        .fill(props.unwrap_or(&empty), &format!("layer `{}`", l.path))?;
                    let path = assets::resolve_path(&self.shared.root, &src, &lctx)?;
                    let shown = img.size.map(|b| (b, img.fit));
                    let probe = guard(
                        || lctx.clone(),
                        "image decoder",
                        || image::probe(&path, &src, &lctx, shown),
                    )??;
                    // A raster decodes to one size whatever the layer; an
                    // SVG is rendered at the size it is shown.
                    let key = if probe.svg { probe.size } else { (0, 0) };
                    let original = self.image(&path, key, || {
                        let bytes = assets::read_file(&path, &src, &lctx)?;
                        guard(
                            || lctx.clone(),
                            "image decoder",
                            || image::decode(&bytes, probe, &src, &lctx),
                        )?
                    })?;
                    // An image shown much smaller than it is gets reduced
                    // once here with an area filter: bilinear sampling at
                    // draw time would alias.
                    let dims = (original.width(), original.height());
                    let pixmap = match img.size.and_then(|b| image::reduced_size(dims, b, img.fit))
                    {
                        None => original,
                        Some(size) => self.image(&path, size, || {
                            guard(
                                || lctx.clone(),
                                "image scaler",
                                || image::reduce(&original, size),
                            )
                        })?,
                    };
                    img.pixmap = Some(pixmap);
                }
                Kind::Video(v) => {
                    if props.is_none() && v.src.props().next().is_some() {
                        continue;
                    }
                    let src = v
                        .src
                        .fill(props.unwrap_or(&empty), &format!("layer `{}`", l.path))?;
                    let source = self.load_video(&src, &lctx)?;
                    let info = source.info().clone();
                    v.prepared = Some(video::PreparedVideo {
                        cursor: Arc::new(Mutex::new(video::Cursor::new(source))),
                        timing: v.timing(self.comp.fps),
                        info,
                    });
                }
                Kind::Group { layers, .. } => self.load_layers(layers, props, ctx)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a captions layer's cues (from its file, or `text` itself) and
    /// shapes each; `source` is its filled template.
    fn load_captions(
        &self,
        t: &mut load::TextLayer,
        source: &str,
        lctx: &str,
    ) -> Result<(), CompositionError> {
        let Some(caps) = &t.captions else {
            return Ok(());
        };
        let invalid = |message: String| CompositionError::Invalid {
            context: lctx.to_owned(),
            message,
        };
        let (content, what) = if caps.from_file {
            let path = assets::resolve_path(&self.shared.root, source, lctx)?;
            let bytes = assets::read_file(&path, source, lctx)?;
            let content = String::from_utf8(bytes)
                .map_err(|_| invalid(format!("captions `{source}` are not UTF-8 text")))?;
            (content, format!("captions `{source}`"))
        } else {
            (source.to_owned(), "captions `text`".to_owned())
        };
        let cues = captions::parse(&content).map_err(|m| invalid(format!("{what}: {m}")))?;
        let chars: usize = cues.iter().map(|c| c.text.chars().count()).sum();
        if chars as u64 > budget::MAX_SHAPED_GLYPHS {
            return Err(invalid(format!(
                "{what}: {chars} characters of cues; the limit is {}",
                budget::MAX_SHAPED_GLYPHS
            )));
        }
        let fps = self.comp.fps;
        let highlight = caps.highlight.is_some();
        let mut shaped = Vec::with_capacity(cues.len());
        let mut fonts = lock(&self.shared.fonts);
        for cue in &cues {
            let (starts, unit_frames) = if highlight && !cue.words.is_empty() {
                captions::word_units(cue, fps)
            } else {
                (vec![0], vec![captions::first_frame_at(cue.start_ms, fps)])
            };
            let cctx = format!("{lctx}: {what} line {}", cue.line);
            let glyphs = fonts.shape(t, &cue.text, &text::Split::At(starts), &cctx)?;
            shaped.push(captions::ShapedCue {
                first: captions::first_frame_at(cue.start_ms, fps),
                end: captions::first_frame_at(cue.end_ms, fps),
                shaped: glyphs,
                unit_frames,
            });
        }
        shaped.sort_by_key(|c| c.first);
        if let Some(caps) = &mut t.captions {
            caps.cues = Some(Arc::new(shaped));
        }
        Ok(())
    }

    fn place_track(
        &self,
        t: &load::Track,
        meta: &CompositionMeta,
        ctx: &str,
    ) -> Result<audio::Placed, CompositionError> {
        let actx = format!("{ctx}: audio `{}`", t.name);
        let src = t.src.fill(&meta.props, &format!("audio `{}`", t.name))?;
        let file = self.load_audio(&src, &actx)?;
        let fps = meta.fps;
        let (rate, frames) = (file.rate(), file.frames());
        // The segment in the file's own samples, so a looped file repeats
        // whole samples of its own rate and resampling sees the loop.
        let in_file = |f: u64| fps.first_sample_of(timebase::FrameIndex(f), rate).0;
        let seg_start = in_file(t.trim_start);
        let seg_end = t.trim_end.map_or(frames, |e| in_file(e).min(frames));
        if seg_start >= seg_end {
            return Err(CompositionError::Invalid {
                context: actx,
                message: format!(
                    "`trim_start` {} frames is past the end of `{src}` ({frames} samples at {rate} Hz)",
                    t.trim_start
                ),
            });
        }
        let seg_len = seg_end - seg_start;
        let start = audio::sample_of(fps, t.start);
        let mut end = audio::sample_of(fps, meta.duration_frames);
        if let Some(e) = t.end {
            end = end.min(audio::sample_of(fps, e));
        }
        if !t.looped {
            end = end.min(start + audio::Placed::output_len(&file, seg_len));
        }
        Ok(audio::Placed {
            file,
            ctx: actx,
            start,
            end: end.max(start),
            seg_start,
            seg_len,
            looped: t.looped,
            volume: t.volume.clone(),
            fade_in: audio::sample_of(fps, t.fade_in),
            fade_out: audio::sample_of(fps, t.fade_out),
            audible_from: start,
            volume_offset: 0,
        })
    }
}

impl SceneComposition {
    /// A decoded image from the shared cache, made by `make` on a miss.
    fn image(
        &self,
        path: &Path,
        size: (u32, u32),
        make: impl FnOnce() -> Result<Arc<Pixmap>, CompositionError>,
    ) -> Result<Arc<Pixmap>, CompositionError> {
        let key = (path.to_owned(), size);
        if let Some(p) = lock(&self.shared.images).get(&key) {
            return Ok(p.clone());
        }
        let p = make()?;
        lock(&self.shared.images).insert(key, p.clone());
        Ok(p)
    }

    /// Opens an audio file of the bundle once (its headers), then shares
    /// it; its samples are decoded by the span when rendered.
    fn load_audio(
        &self,
        src: &str,
        actx: &str,
    ) -> Result<Arc<audio_file::AudioFile>, CompositionError> {
        let path = assets::resolve_path(&self.shared.root, src, actx)?;
        if let Some(p) = lock(&self.shared.audio).get(&path) {
            return Ok(p.clone());
        }
        let file = guard(
            || actx.to_owned(),
            "audio decoder",
            || audio_file::AudioFile::open(&path, src),
        )?
        .map_err(|m| CompositionError::Invalid {
            context: actx.to_owned(),
            message: format!("audio `{src}`: {m}"),
        })?;
        let p = Arc::new(file);
        lock(&self.shared.audio).insert(path, p.clone());
        Ok(p)
    }

    /// Opens a video file of the bundle once (its headers), then shares it.
    fn load_video(&self, src: &str, lctx: &str) -> Result<Arc<dyn VideoSource>, CompositionError> {
        let invalid = |message: String| CompositionError::Invalid {
            context: lctx.to_owned(),
            message,
        };
        let Some(decoders) = &self.shared.video else {
            return Err(invalid(format!(
                "video `{src}`: this process decodes no video (open the bundle with `SceneBundle::open_with_video`)"
            )));
        };
        let path = assets::resolve_path(&self.shared.root, src, lctx)?;
        if let Some(p) = lock(&self.shared.videos).get(&path) {
            return Ok(p.clone());
        }
        let source = guard(
            || lctx.to_owned(),
            "video decoder",
            || decoders.open(&path, src),
        )?
        .map_err(|m| invalid(format!("video `{src}`: {m}")))?;
        lock(&self.shared.videos).insert(path, source.clone());
        Ok(source)
    }

    /// The sound of the scene's video layers, placed like audio tracks. A
    /// video without an audio stream is silent; one whose audio cannot be
    /// decoded is refused unless `muted`. Only rate 1 sounds: a faster or
    /// slower video is silent (its sound would need time stretching).
    fn video_sounds(
        &self,
        layers: &[Layer],
        meta: &CompositionMeta,
        ctx: &str,
    ) -> Result<Vec<audio::Placed>, CompositionError> {
        let mut out = Vec::new();
        for s in video::sounding(layers) {
            let Some(p) = &s.video.prepared else { continue };
            if !p.info.has_audio || s.video.rate != video::RATE_DEN {
                continue;
            }
            let lctx = format!("{ctx}: layer `{}`", s.path);
            let src = s
                .video
                .src
                .fill(&meta.props, &format!("layer `{}`", s.path))?;
            let file = self.load_audio(&src, &lctx).map_err(|e| match e {
                CompositionError::Invalid { context, message } => CompositionError::Invalid {
                    context,
                    message: format!("{message}; set `muted` to use the video without its sound"),
                },
                e => e,
            })?;
            out.extend(video::place_sound(
                &s,
                file,
                meta.fps,
                meta.duration_frames,
                lctx,
            ));
        }
        Ok(out)
    }
}

impl Composition for SceneComposition {
    fn id(&self) -> &str {
        &self.comp.id
    }

    fn describe(&self, props: &Props) -> Result<CompositionMeta, CompositionError> {
        Ok(self.resolve(props)?.meta)
    }

    fn prepare(&self, props: &Props) -> Result<Arc<dyn Prepared>, CompositionError> {
        Ok(Arc::new(self.prepare_scene(props)?))
    }

    /// Counts frame buffers, text and layers as `describe` does, and the
    /// images from their files' headers (nothing is decoded).
    fn budget(&self, props: &Props) -> Result<RenderBudget, CompositionError> {
        let Resolved {
            comp, meta, budget, ..
        } = self.resolve(props)?;
        let images = self.image_bytes(&comp.layers, Some(&meta.props), &comp.ctx)?;
        budget::check_images(images, &comp.ctx)?;
        let mut videos = 0u64;
        for (path, v) in video::video_layers(&comp.layers) {
            let lctx = format!("{}: layer `{path}`", comp.ctx);
            let src = v.src.fill(&meta.props, &format!("layer `{path}`"))?;
            let info = self.load_video(&src, &lctx)?.info().clone();
            videos = videos.saturating_add(video::source_bytes(&info));
        }
        Ok(RenderBudget {
            shared_bytes: budget
                .shared_bytes
                .saturating_add(images)
                .saturating_add(videos),
            ..budget
        })
    }
}

/// The image layers among `layers`, at every level, with their paths.
fn image_layers<'a>(layers: &'a [Layer], out: &mut Vec<(&'a str, &'a load::ImageLayer)>) {
    for l in layers {
        match &l.kind {
            Kind::Image(img) => out.push((&l.path, img)),
            Kind::Group { layers, .. } => image_layers(layers, out),
            _ => {}
        }
    }
}

/// Whether `layers` look the same whatever the props: no text or image
/// source with a `{prop}` placeholder, and no override naming one of them,
/// a group holding them or a layer inside them. Their drawing can then be
/// shared by every variant.
fn template_free(layers: &[Layer], overridden: &[String]) -> bool {
    let touches = |path: &str| {
        overridden.iter().any(|key| {
            let target = overrides::target_path(key);
            target == path
                || target.starts_with(&format!("{path}."))
                || path.starts_with(&format!("{target}."))
        })
    };
    layers.iter().all(|l| {
        !touches(&l.path)
            && match &l.kind {
                Kind::Text(t) => t.text_override.is_none() && t.template.props().next().is_none(),
                Kind::Image(i) => i.src.props().next().is_none(),
                Kind::Video(v) => v.src.props().next().is_none(),
                Kind::Group { layers, .. } => template_free(layers, overridden),
                _ => true,
            }
    })
}

/// An override as given: its key (`text.Title`) and value.
type Override<'p> = (&'p String, &'p serde_json::Value);

/// A composition resolved with its props.
struct Resolved {
    /// Overrides applied.
    comp: Comp,
    /// The overrides' keys (`text.Title`, …).
    overridden: Vec<String>,
    meta: CompositionMeta,
    /// Without images (counting them reads files).
    budget: RenderBudget,
}

/// The budget of a resolved composition without its images (counting them
/// reads files), refused over the frame-buffer and shaping limits.
fn frame_and_text_budget(
    comp: &Comp,
    meta: &CompositionMeta,
) -> Result<RenderBudget, CompositionError> {
    let tally = budget::tally(&comp.layers, &mut |l, t| text_chars(l, t, &meta.props))?;
    let background = comp
        .layers
        .first()
        .is_some_and(|l| render::is_static(l, meta.duration_frames));
    let size = (meta.width, meta.height);
    let b = budget::budget(size, background, &tally, 0);
    budget::check(&b, size, &tally, &comp.ctx)?;
    Ok(b)
}

/// Characters a text layer shows with `props`: its override, or its
/// template filled.
fn text_chars(l: &Layer, t: &load::TextLayer, props: &Props) -> Result<u64, CompositionError> {
    let n = match &t.text_override {
        Some(s) => s.chars().count(),
        None => t
            .template
            .fill(props, &format!("layer `{}`", l.path))?
            .chars()
            .count(),
    };
    Ok(n as u64)
}

/// A scene composition resolved with its props: text shaped, images
/// decoded, audio placed.
#[derive(Debug, Clone)]
pub struct PreparedScene {
    inner: Arc<PreparedInner>,
}

#[derive(Debug)]
struct PreparedInner {
    meta: CompositionMeta,
    layers: Vec<Layer>,
    /// Leading layers that look the same on every frame: drawn once and
    /// copied.
    static_prefix: usize,
    /// For each layer after them, the frame from which it draws the same
    /// pixels on every frame ([`render::settles_at`]).
    settles: Vec<Option<f64>>,
    /// Their drawing, shared by this scene's renderers (and, when no prop
    /// can change it, by every variant of the composition).
    background: Background,
    depth: usize,
    tracks: Vec<audio::Placed>,
}

impl Prepared for PreparedScene {
    fn meta(&self) -> &CompositionMeta {
        &self.inner.meta
    }

    fn frame_renderer(&self) -> Result<Box<dyn FrameRenderer>, CompositionError> {
        Ok(Box::new(SceneRenderer {
            scene: self.inner.clone(),
            background: None,
            pool: Vec::new(),
            previous: None,
            marks: Vec::new(),
            measured: Damage::default(),
        }))
    }

    fn render_audio(&self, span: SampleSpan, out: &mut [f32]) -> Result<(), CompositionError> {
        check_audio_buffer(span, out)?;
        audio::mix(&self.inner.tracks, self.inner.meta.fps, span, out)
    }
}

/// Renders frames of a [`PreparedScene`] on one thread, keeping the static
/// background and the scratch layers for groups between frames.
struct SceneRenderer {
    scene: Arc<PreparedInner>,
    background: Option<Arc<Vec<u8>>>,
    pool: Vec<Pixmap>,
    /// The buffer the last successful `render_frame_reusing` drew into
    /// (address and length), whose layers `marks` describes. `None`: trust
    /// nothing.
    previous: Option<(usize, usize)>,
    /// What each layer after the static prefix drew on the last frame
    /// rendered, in order (allocations reused).
    marks: Vec<LayerMark>,
    /// Scratch for a changing layer's measured bound.
    measured: Damage,
}

/// What one layer drew on a frame, and in which still state
/// ([`render::still_at`]).
#[derive(Default)]
struct LayerMark {
    still: Option<render::Still>,
    bounds: Damage,
}

impl SceneRenderer {
    fn alloc(&self, frame: u64) -> Result<Pixmap, CompositionError> {
        Pixmap::new(self.scene.meta.width, self.scene.meta.height).ok_or_else(|| {
            CompositionError::Render {
                frame,
                message: "cannot allocate a layer".into(),
            }
        })
    }
}

impl SceneRenderer {
    /// The static background: drawn by the first renderer that needs it
    /// (the others wait for it), then shared.
    fn shared_background(&mut self, ctx: &render::Ctx) -> Result<Arc<Vec<u8>>, CompositionError> {
        let scene = Arc::clone(&self.scene);
        let mut slot = lock(&scene.background);
        if let Some(bg) = &*slot {
            return Ok(Arc::clone(bg));
        }
        let mut bg = self.alloc(ctx.frame)?;
        render::draw_layers(
            &scene.layers[..scene.static_prefix],
            &mut Canvas::new(bg.as_mut(), Damage::default()),
            &mut self.pool,
            0.0,
            Transform::identity(),
            ctx,
        )?;
        let bg = Arc::new(bg.take());
        *slot = Some(Arc::clone(&bg));
        Ok(bg)
    }
}

impl SceneRenderer {
    /// Renders `frame` over the previous frame in `rgba` when that buffer
    /// is the one rendered into last (see `render_frame_reusing`), and sets
    /// `changed`, if given, to where the bytes may differ from before.
    fn render_over_previous(
        &mut self,
        frame: FrameIndex,
        rgba: &mut [u8],
        changed: Option<&mut Damage>,
    ) -> Result<(), CompositionError> {
        let buffer = (rgba.as_ptr() as usize, rgba.len());
        // Taken: an error below leaves nothing to trust.
        let reuse = self.previous.take() == Some(buffer);
        self.render(frame, rgba, reuse, changed)?;
        self.previous = Some(buffer);
        Ok(())
    }

    /// Renders `frame` into `rgba`. With `reuse`, `rgba` holds the frame
    /// `self.marks` describes, and only what changes is repainted; without,
    /// everything is. Either way `self.marks` then describes this frame,
    /// and `changed`, if given, bounds the pixels written: where the
    /// background went back and where the layers drawn again drew (the
    /// whole frame without `reuse`).
    fn render(
        &mut self,
        frame: FrameIndex,
        rgba: &mut [u8],
        reuse: bool,
        mut changed: Option<&mut Damage>,
    ) -> Result<(), CompositionError> {
        let scene = Arc::clone(&self.scene);
        let meta = &scene.meta;
        check_frame_buffer(meta, rgba)?;
        if frame.0 >= meta.duration_frames {
            return Err(CompositionError::Render {
                frame: frame.0,
                message: format!(
                    "outside the composition: frames run 0-{}",
                    meta.duration_frames - 1
                ),
            });
        }
        let ctx = render::Ctx {
            size: [f64::from(meta.width), f64::from(meta.height)],
            frame: frame.0,
        };
        while self.pool.len() < scene.depth {
            let p = self.alloc(frame.0)?;
            self.pool.push(p);
        }
        let split = scene.static_prefix;
        if split > 0 && self.background.is_none() {
            self.background = Some(self.shared_background(&ctx)?);
        }
        let layers = &scene.layers[split..];
        let t = frame.0 as f64;
        let reuse = reuse && self.marks.len() == layers.len();
        self.marks.resize_with(layers.len(), LayerMark::default);
        // Which layers draw what they drew last time, and where the frame
        // must be repainted.
        let mut redraw = vec![true; layers.len()];
        let mut stale = Damage::whole_frame();
        if reuse {
            stale = Damage::default();
            let mut kept = false;
            for (i, l) in layers.iter().enumerate() {
                let still = render::still_at(l, t, scene.settles[i]);
                redraw[i] = still.is_none() || still != self.marks[i].still;
                kept |= !redraw[i];
            }
            for i in (0..layers.len()).filter(|&i| redraw[i]) {
                stale.extend(&self.marks[i].bounds);
                // Once the whole frame is repainted (a composited group's
                // bound is the frame), where a layer draws no longer
                // matters: measuring would draw its offscreen layers twice.
                if kept && !stale.is_whole() {
                    // Where it is about to draw: layers kept there are
                    // drawn again over it.
                    self.measure(&layers[i], rgba, t, &ctx)?;
                    stale.extend(&self.measured);
                }
            }
            // A kept layer under or over the repainted region is drawn
            // again, and everything under it repainted, until no kept
            // layer touches the region: every layer drawn then lies wholly
            // inside it, every other one wholly outside, so the frame is
            // byte for byte a full render.
            while let Some(i) =
                (0..layers.len()).find(|&i| !redraw[i] && self.marks[i].bounds.intersects(&stale))
            {
                redraw[i] = true;
                stale.extend(&self.marks[i].bounds);
            }
        }
        let background = self.background.as_deref().map(Vec::as_slice);
        let (w, h) = (meta.width, meta.height);
        canvas::restore(rgba, background, w, &stale);
        if let Some(c) = changed.as_deref_mut() {
            c.clone_from(&stale);
        }
        for (i, l) in layers.iter().enumerate().filter(|&(i, _)| redraw[i]) {
            let pm = frame_pixmap(rgba, w, h, frame.0)?;
            let mark = &mut self.marks[i];
            mark.still = None;
            let mut canvas = Canvas::new(pm, std::mem::take(&mut mark.bounds));
            let drawn = draw_top_level(l, &mut canvas, &mut self.pool, t, &ctx);
            mark.bounds = canvas.into_damage();
            if let Some(c) = changed.as_deref_mut() {
                c.extend(&mark.bounds);
            }
            drawn?;
            mark.still = render::still_at(l, t, scene.settles[i]);
        }
        Ok(())
    }

    /// Records in `self.measured` where `l` draws at `t`, drawing nothing
    /// into `rgba`.
    fn measure(
        &mut self,
        l: &load::Layer,
        rgba: &mut [u8],
        t: f64,
        ctx: &render::Ctx,
    ) -> Result<(), CompositionError> {
        let (w, h) = (self.scene.meta.width, self.scene.meta.height);
        let pm = frame_pixmap(rgba, w, h, ctx.frame)?;
        let mut canvas = Canvas::measuring(pm, std::mem::take(&mut self.measured));
        let measured = draw_top_level(l, &mut canvas, &mut self.pool, t, ctx);
        self.measured = canvas.into_damage();
        measured
    }
}

/// Draws one top-level layer at frame `t`.
fn draw_top_level(
    l: &load::Layer,
    canvas: &mut Canvas<'_>,
    pool: &mut [Pixmap],
    t: f64,
    ctx: &render::Ctx,
) -> Result<(), CompositionError> {
    render::draw_layers(
        std::slice::from_ref(l),
        canvas,
        pool,
        t,
        Transform::identity(),
        ctx,
    )
}

/// `rgba` as a `w × h` pixmap.
fn frame_pixmap(
    rgba: &mut [u8],
    w: u32,
    h: u32,
    frame: u64,
) -> Result<PixmapMut<'_>, CompositionError> {
    PixmapMut::from_bytes(rgba, w, h).ok_or_else(|| CompositionError::Render {
        frame,
        message: "frame buffer does not match the size".into(),
    })
}

impl FrameRenderer for SceneRenderer {
    fn render_frame(&mut self, frame: FrameIndex, rgba: &mut [u8]) -> Result<(), CompositionError> {
        self.forget_previous();
        self.render(frame, rgba, false, None)
    }

    /// Repaints only what changed since the previous frame drawn into the
    /// same buffer: the background goes back where a changing layer drew
    /// then or draws now (and under any layer that overlaps that region,
    /// which is drawn again), then those layers are drawn. The same bytes
    /// as a full render: everywhere else the buffer already holds them.
    fn render_frame_reusing(
        &mut self,
        frame: FrameIndex,
        rgba: &mut [u8],
    ) -> Result<(), CompositionError> {
        self.render_over_previous(frame, rgba, None)
    }

    /// As `render_frame_reusing`; what changed is where the background was
    /// put back and where the layers drawn again drew.
    fn render_frame_changed(
        &mut self,
        frame: FrameIndex,
        rgba: &mut [u8],
        changed: &mut Damage,
    ) -> Result<(), CompositionError> {
        self.render_over_previous(frame, rgba, Some(changed))
    }

    fn forget_previous(&mut self) {
        self.previous = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promo() -> SceneBundle {
        SceneBundle::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo"))
            .expect("promo opens")
    }

    fn prepared(bundle: &SceneBundle, props: &[(&str, serde_json::Value)]) -> PreparedScene {
        let props: Props = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        bundle
            .scene_composition("promo")
            .expect("promo")
            .prepare_scene(&props)
            .expect("prepares")
    }

    fn frame(p: &PreparedScene, f: u64) -> Vec<u8> {
        let mut rgba = vec![0u8; p.meta().frame_bytes()];
        p.frame_renderer()
            .expect("renderer")
            .render_frame(FrameIndex(f), &mut rgba)
            .expect("renders");
        rgba
    }

    #[test]
    fn variants_share_a_background_no_prop_can_change() {
        let bundle = promo();
        let ada = prepared(&bundle, &[("name", "Ada".into())]);
        let bob = prepared(&bundle, &[("name", "Bob".into()), ("count", 3.into())]);
        assert!(Arc::ptr_eq(&ada.inner.background, &bob.inner.background));
        // An override of a background layer makes it the variant's own.
        let hidden = prepared(&bundle, &[("visible.Background", false.into())]);
        assert!(!Arc::ptr_eq(
            &ada.inner.background,
            &hidden.inner.background
        ));
        // A shared background draws what a fresh bundle draws.
        let bob_frame = frame(&bob, 120);
        let _ = frame(&hidden, 120);
        let fresh = prepared(&promo(), &[("name", "Bob".into()), ("count", 3.into())]);
        assert!(
            frame(&fresh, 120) == bob_frame,
            "a shared background changed the frame"
        );
        assert!(frame(&ada, 120) != bob_frame);
    }

    #[test]
    fn backgrounds_with_placeholders_or_overrides_are_not_shared() {
        let bundle = promo();
        let comp = &bundle.scene_composition("promo").expect("promo").comp;
        let layers = &comp.layers;
        let (background, title) = (&layers[..1], &layers[3..4]);
        assert!(template_free(background, &[]));
        assert!(
            !template_free(title, &[]),
            "`Hello, {{name}}!` has a placeholder"
        );
        assert!(!template_free(background, &["visible.Background".into()]));
        assert!(template_free(
            background,
            &["transform.Square.rotation".into()]
        ));
    }
}
