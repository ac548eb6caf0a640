//! `layer_registry!`: generates the spec, config and module enums that dispatch to every
//! registered layer kind (see [`crate::registry`]).

macro_rules! layer_registry {
    ($($name:ident => $spec:ty, $config:ty, $module:ident::$layer:ident),+ $(,)?) => {
        /// The names a config may use for a layer, in registration order.
        pub const REGISTERED_LAYERS: &[&str] = &[$(stringify!($name)),+];

        /// A layer as a config file writes it: its registered name and its settings; or
        /// `Repeat(n: 30, layer: ...)`, that layer `n` times over (see [`expand`](crate::registry::expand)).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum LayerSpec {
            $($name($spec),)+
            Repeat($crate::registry::RepeatSpec),
        }

        /// A layer's full, validated configuration.
        #[derive(Debug, Clone)]
        pub enum LayerConfig {
            $($name($config)),+
        }

        /// Any registered layer, as a Burn module.
        #[derive(Module, Debug)]
        pub enum Layer<B: Backend> {
            $($name($module::$layer<B>)),+
        }

        impl LayerSpec {
            /// The registered name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$name(_) => stringify!($name),)+
                    Self::Repeat(_) => "Repeat",
                }
            }

            /// Validates the settings for an input of width `d_input`. A `Repeat` is expanded
            /// into its layers first ([`expand`](crate::registry::expand)).
            pub fn resolve(&self, ctx: &LayerContext, d_input: usize) -> Result<LayerConfig, LayerError> {
                match self {
                    $(Self::$name(spec) => spec.resolve(ctx, d_input).map(LayerConfig::$name),)+
                    Self::Repeat(_) => Err(LayerError::Invalid {
                        layer: "Repeat",
                        reason: "expand the stack before resolving its layers".into(),
                    }),
                }
            }
        }

        impl LayerConfig {
            pub fn init<B: Backend>(&self, device: &B::Device) -> Layer<B> {
                match self {
                    $(Self::$name(config) => Layer::$name(config.init(device))),+
                }
            }

            /// The width of this layer's output.
            pub fn d_output(&self) -> usize {
                match self {
                    $(Self::$name(config) => config.d_output()),+
                }
            }

            /// Parameters of the layer `init` would build, counted without building it.
            pub fn num_params(&self) -> u64 {
                match self {
                    $(Self::$name(config) => config.num_params()),+
                }
            }

            /// Values (f32 each) a training step keeps for the backward pass; see
            /// [`crate::footprint`].
            pub fn activations(&self, step: &$crate::footprint::StepShape) -> f64 {
                match self {
                    $(Self::$name(config) => config.activations(step)),+
                }
            }
        }

        impl<B: Backend> Layer<B> {
            /// `[batch, time, d_input]` -> `[batch, time, d_output]`.
            pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
                match self {
                    $(Self::$name(layer) => layer.forward(x)),+
                }
            }

            /// `forward` for the newest positions during generation; layers that attend keep
            /// the keys and values of earlier positions in `cache`.
            pub fn forward_cached(
                &self,
                x: Tensor<B, 3>,
                cache: &mut Option<$crate::attention::KvCache<B>>,
            ) -> Tensor<B, 3> {
                match self {
                    $(Self::$name(layer) => layer.forward_cached(x, cache)),+
                }
            }
        }
    };
}
