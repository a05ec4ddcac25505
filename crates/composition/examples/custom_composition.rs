//! An embedding service's own Rust composition, registered in a [`Registry`]
//! beside a scene bundle's compositions and rendered through the same traits
//! a Montage worker uses.
//!
//! ```text
//! cargo run -p composition --example custom_composition -- /tmp/pulse.png
//! ```

use std::sync::Arc;

use composition::scene::SceneBundle;
use composition::{
    Composition, CompositionError, CompositionMeta, CompositionSource, FrameRenderer, Prepared,
    Props, Registry, check_audio_buffer, check_frame_buffer,
};
use timebase::{Fps, FrameIndex, SampleSpan};

/// A pulsing disc whose colour comes from the `hue` prop (0-360).
struct Pulse;

struct PreparedPulse {
    meta: CompositionMeta,
    rgb: [u8; 3],
}

struct PulseRenderer {
    meta: CompositionMeta,
    rgb: [u8; 3],
}

fn hue_to_rgb(h: f64) -> [u8; 3] {
    let x = 1.0 - ((h / 60.0) % 2.0 - 1.0).abs();
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

impl Composition for Pulse {
    fn id(&self) -> &str {
        "pulse"
    }

    fn describe(&self, props: &Props) -> Result<CompositionMeta, CompositionError> {
        let fps = Fps::new(25, 1).map_err(|e| CompositionError::Invalid {
            context: "fps".into(),
            message: e.to_string(),
        })?;
        let meta = CompositionMeta {
            id: "pulse".into(),
            width: 320,
            height: 180,
            fps,
            duration_frames: 50,
            has_audio: false,
            props: props.clone(),
            // Bump when `pulse` would draw different pixels for the same
            // props: cached chunks of the old version stop matching.
            version: "1".into(),
        };
        meta.validate()?;
        Ok(meta)
    }

    fn prepare(&self, props: &Props) -> Result<Arc<dyn Prepared>, CompositionError> {
        let hue = match props.get("hue") {
            None => 200.0,
            Some(v) => v
                .as_f64()
                .filter(|h| (0.0..360.0).contains(h))
                .ok_or_else(|| CompositionError::Invalid {
                    context: "prop `hue`".into(),
                    message: format!("{v} is invalid: expected a number in 0-360"),
                })?,
        };
        Ok(Arc::new(PreparedPulse {
            meta: self.describe(props)?,
            rgb: hue_to_rgb(hue),
        }))
    }
}

impl Prepared for PreparedPulse {
    fn meta(&self) -> &CompositionMeta {
        &self.meta
    }

    fn frame_renderer(&self) -> Result<Box<dyn FrameRenderer>, CompositionError> {
        Ok(Box::new(PulseRenderer {
            meta: self.meta.clone(),
            rgb: self.rgb,
        }))
    }

    fn render_audio(&self, span: SampleSpan, out: &mut [f32]) -> Result<(), CompositionError> {
        check_audio_buffer(span, out)?;
        out.fill(0.0);
        Ok(())
    }
}

impl FrameRenderer for PulseRenderer {
    fn render_frame(&mut self, frame: FrameIndex, rgba: &mut [u8]) -> Result<(), CompositionError> {
        check_frame_buffer(&self.meta, rgba)?;
        let (w, h) = (self.meta.width as i64, self.meta.height as i64);
        // The radius depends on the frame alone: any order, any thread.
        let r = 20 + (frame.0 as i64 % 25) * 2;
        for (i, px) in rgba.chunks_exact_mut(4).enumerate() {
            let (x, y) = (i as i64 % w - w / 2, i as i64 / w - h / 2);
            let inside = x * x + y * y <= r * r;
            let c = if inside { self.rgb } else { [16, 16, 24] };
            px.copy_from_slice(&[c[0], c[1], c[2], 255]);
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "pulse.png".to_owned());

    // The service's registry: the built-ins, its own composition, and the
    // compositions of a scene bundle, all behind one `CompositionSource`.
    let mut registry = Registry::with_builtins();
    registry.register(Pulse)?;
    let promo_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promo");
    let bundle = SceneBundle::open(&promo_dir)?;
    for id in bundle.ids() {
        registry.register_arc(bundle.composition(&id)?)?;
    }
    println!("compositions: {}", registry.ids().join(", "));

    let mut props = Props::new();
    props.insert("hue".into(), 30.into());
    let meta = registry.composition("pulse")?.describe(&props)?;
    println!("{}", serde_json::to_string(&meta)?);
    let (_, png) = composition::still::render_still_png(&registry, "pulse", &props, 12)?;
    std::fs::write(&out, png)?;
    println!("wrote {out}");
    Ok(())
}
