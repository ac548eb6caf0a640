//! [`Engine`] and [`Model`]: what the CLI and the tests do with a backend, as trait objects, so
//! that the generic trainer and model are compiled here once per backend instead of in every
//! crate and test binary that calls them.

use crate::dispatch::{dispatch_devices, DevicesTask};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;
use tinygpt_data::Split;
use tinygpt_layers::AttentionMap;
use tinygpt_model::{Conversation, LanguageModel, ModelConfig, ReplyEnd, Sampler};
use tinygpt_tokenizer::AnyTokenizer;
use tinygpt_train::bench::{StepPlan, StepTiming};
use tinygpt_train::hf::HfError;
use tinygpt_train::{
    BackendError, BackendKind, Cluster, Devices, LoadedRun, Prepared, TrainError, TrainOptions,
    TrainReport, TrainingSpec,
};

/// A backend and the devices it runs on, ready for jobs.
pub trait Engine {
    fn kind(&self) -> BackendKind;

    /// Data-parallel peers on this machine (CPU peers, or GPUs); 1 for one device.
    fn peers(&self) -> usize;

    /// Trains `prepared` from scratch or from `options.resume`: on the one device, or
    /// data-parallel over every device of this engine and the nodes of `cluster`.
    fn train(
        &self,
        prepared: &Prepared,
        options: &TrainOptions,
        cluster: &Cluster,
    ) -> Result<TrainReport, TrainError>;

    /// The model of a trained run, a checkpoint or a Hugging Face directory, with its weights,
    /// for inference.
    fn load(&self, run: &LoadedRun) -> Result<Box<dyn Model>, TrainError>;

    /// A model of `config` with freshly initialised weights drawn from `seed`.
    fn init(&self, config: &ModelConfig, seed: u64) -> Box<dyn Model>;

    /// Times training steps of `config`'s model on random tokens (shared among the peers when
    /// there are several), reporting each step to `on_step` as it ends.
    fn time_train_steps(
        &self,
        config: &ModelConfig,
        training: &TrainingSpec,
        plan: StepPlan,
        on_step: &mut dyn FnMut(usize, Duration),
    ) -> Result<StepTiming, TrainError>;
}

/// A model with its weights on an engine's device, for inference: no autodiff, dropout off.
pub trait Model {
    fn config(&self) -> &ModelConfig;

    /// Continues `prompt` by up to `max_new_tokens` tokens, handing each to `on_token`, which may
    /// stop early (see [`LanguageModel::generate_with`]).
    fn generate(
        &self,
        prompt: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(usize) -> ControlFlow<()>,
    );

    /// A conversation kept across turns (see [`Conversation::reply`]): each
    /// `reply(context, ...)` reads only the part of `context` it has not read before.
    fn conversation(&self) -> Box<dyn Chat + '_>;

    /// The logits of every position of `tokens` (`[len][vocab]`), from scratch.
    fn logits(&self, tokens: &[usize]) -> Vec<Vec<f32>>;

    /// The attention weights of every attention layer for `tokens` (at most `block_size`), each
    /// with its layer's index.
    fn attention_maps(&self, tokens: &[usize]) -> Vec<(usize, AttentionMap)>;

    /// The mean loss over every token of a split of `prepared`'s corpus.
    fn split_loss(&self, prepared: &Prepared, split: Split) -> f64;

    /// Writes the model as a Hugging Face directory.
    fn export_hf(&self, tokenizer: &AnyTokenizer, dir: &Path) -> Result<(), HfError>;

    /// Parameters of the model (without drawing weights that are not drawn yet).
    fn num_params(&self) -> usize;

    /// Every parameter, in module order, with its values.
    fn parameters(&self) -> Vec<Parameter>;
}

/// A conversation with a [`Model`], its keys and values cached between turns.
pub trait Chat {
    /// Continues the conversation whose whole text so far is `context` (see
    /// [`Conversation::reply`]).
    fn reply(
        &mut self,
        context: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(usize) -> ControlFlow<()>,
    ) -> ReplyEnd;

    /// Tokens read so far.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct ChatOn<'a, B: Backend> {
    model: &'a LanguageModel<B>,
    conversation: Conversation<B>,
}

impl<B: Backend> Chat for ChatOn<'_, B> {
    fn reply(
        &mut self,
        context: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(usize) -> ControlFlow<()>,
    ) -> ReplyEnd {
        self.conversation
            .reply(self.model, context, max_new_tokens, sampler, on_token)
    }

    fn len(&self) -> usize {
        self.conversation.len()
    }
}

/// One parameter of a model: its path in the module tree (`token_embedding.weight`,
/// `layers.0.Block.attention.qkv.weight`), its shape and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The engine for `kind` on the devices `devices` names (`None`: the one default device), after
/// checking that each can run here.
pub fn engine(
    kind: BackendKind,
    devices: Option<&Devices>,
) -> Result<Box<dyn Engine>, BackendError> {
    dispatch_devices(kind, devices, MakeEngine)
}

struct MakeEngine;

impl DevicesTask for MakeEngine {
    type Output = Box<dyn Engine>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>, kind: BackendKind) -> Self::Output {
        Box::new(On::<B> { kind, devices })
    }
}

/// [`Engine`] on backend `B`.
struct On<B: AutodiffBackend> {
    kind: BackendKind,
    devices: Vec<B::Device>,
}

impl<B: AutodiffBackend> On<B> {
    fn device(&self) -> &B::Device {
        &self.devices[0]
    }
}

impl<B: AutodiffBackend> Engine for On<B> {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn peers(&self) -> usize {
        self.devices.len()
    }

    fn train(
        &self,
        prepared: &Prepared,
        options: &TrainOptions,
        cluster: &Cluster,
    ) -> Result<TrainReport, TrainError> {
        tinygpt_train::train_parallel::<B>(prepared, options, &self.devices, self.kind, cluster)
    }

    fn load(&self, run: &LoadedRun) -> Result<Box<dyn Model>, TrainError> {
        let model = run.load_model::<B::InnerBackend>(self.device())?;
        Ok(Box::new(Loaded {
            model,
            config: run.model.clone(),
            device: self.device().clone(),
        }))
    }

    fn init(&self, config: &ModelConfig, seed: u64) -> Box<dyn Model> {
        let device = self.device().clone();
        B::InnerBackend::seed(&device, seed);
        Box::new(Loaded {
            model: config.init::<B::InnerBackend>(&device),
            config: config.clone(),
            device,
        })
    }

    fn time_train_steps(
        &self,
        config: &ModelConfig,
        training: &TrainingSpec,
        plan: StepPlan,
        on_step: &mut dyn FnMut(usize, Duration),
    ) -> Result<StepTiming, TrainError> {
        let name = self.kind.name();
        if self.devices.len() > 1 {
            tinygpt_train::bench::time_parallel_train_steps::<B>(
                config,
                training,
                plan,
                &self.devices,
                name,
            )
        } else {
            Ok(tinygpt_train::bench::time_train_steps::<B>(
                config,
                training,
                plan,
                self.device(),
                name,
                on_step,
            ))
        }
    }
}

/// [`Model`] on backend `B`.
struct Loaded<B: Backend> {
    model: LanguageModel<B>,
    config: ModelConfig,
    device: B::Device,
}

impl<B: Backend> Model for Loaded<B> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn generate(
        &self,
        prompt: &[usize],
        max_new_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(usize) -> ControlFlow<()>,
    ) {
        self.model
            .generate_with(prompt, max_new_tokens, sampler, on_token)
    }

    fn conversation(&self) -> Box<dyn Chat + '_> {
        Box::new(ChatOn {
            model: &self.model,
            conversation: Conversation::default(),
        })
    }

    fn logits(&self, tokens: &[usize]) -> Vec<Vec<f32>> {
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &self.device);
        let logits = self.model.forward(ids);
        let [_, _, vocab] = logits.dims();
        let values: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits");
        values.chunks(vocab).map(<[f32]>::to_vec).collect()
    }

    fn attention_maps(&self, tokens: &[usize]) -> Vec<(usize, AttentionMap)> {
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &self.device);
        self.model.attention_maps(ids)
    }

    fn split_loss(&self, prepared: &Prepared, split: Split) -> f64 {
        tinygpt_train::full_split_loss(&self.model, prepared, split, &self.device)
    }

    fn export_hf(&self, tokenizer: &AnyTokenizer, dir: &Path) -> Result<(), HfError> {
        tinygpt_train::hf::export(&self.model, &self.config, tokenizer, dir)
    }

    fn num_params(&self) -> usize {
        self.model.num_params()
    }

    fn parameters(&self) -> Vec<Parameter> {
        struct Collect {
            path: Vec<String>,
            found: Vec<Parameter>,
        }
        impl<B: Backend> ModuleVisitor<B> for Collect {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let tensor = param.val();
                self.found.push(Parameter {
                    name: self.path.join("."),
                    shape: tensor.dims().to_vec(),
                    values: tensor
                        .into_data()
                        .convert::<f32>()
                        .to_vec()
                        .expect("f32 values"),
                });
            }
        }
        let mut collect = Collect {
            path: Vec::new(),
            found: Vec::new(),
        };
        self.model.visit(&mut collect);
        collect.found
    }
}
