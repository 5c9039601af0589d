//! In-account references to images, as `DescribeImageReferences` lists them: instances, launch templates, SSM
//! parameters and Image Builder recipes of the owner's own account that use an image.
//!
//! A reference is stored without its Region: like every other datum of the simulator it is the same in every
//! Region, and its ARN names the Region the request was signed for. The dataset's references are drawn from a
//! random stream of their own, derived from the seed, so that they changed none of the dataset's other draws.

use crate::model::Image;
use crate::rng::{SplitMix64, mix64};

const DOMAIN_REFERENCES: u64 = 0x7265_6665_7200_0009;

pub(crate) const INSTANCE: &str = "ec2:Instance";
pub(crate) const LAUNCH_TEMPLATE: &str = "ec2:LaunchTemplate";

/// The resource types `DescribeImageReferences` knows, in the order the dataset lists references of an image.
pub const REFERENCE_RESOURCE_TYPES: [&str; 5] =
    [INSTANCE, LAUNCH_TEMPLATE, "ssm:Parameter", "imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe"];

/// The instance states the `state-name` option takes, all of them by default.
pub const INSTANCE_STATES: [&str; 6] = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"];

/// How many launch template versions are checked when `version-depth` is not given.
pub const DEFAULT_REFERENCE_VERSION_DEPTH: u32 = 10;
/// The largest `version-depth` (and the most versions a launch template can have).
pub(crate) const MAX_VERSION_DEPTH: u32 = 10_000;

/// The Region in ARNs of requests without a credential scope, and of `Simulator::references`.
pub const DEFAULT_REFERENCE_REGION: &str = "us-east-1";

/// What kind of resource references an image, with what decides whether a query counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceKind {
    /// An instance launched from the image, in one of `INSTANCE_STATES`.
    Instance {
        state: String,
    },
    /// A launch template whose version `depth` (1 = the newest) uses the image: it is found with a
    /// `version-depth` of at least `depth`. None of its newer versions uses the image.
    LaunchTemplate {
        depth: u32,
    },
    SsmParameter,
    ImageRecipe,
    ContainerRecipe,
}

impl ReferenceKind {
    pub fn resource_type(&self) -> &'static str {
        match self {
            ReferenceKind::Instance { .. } => INSTANCE,
            ReferenceKind::LaunchTemplate { .. } => LAUNCH_TEMPLATE,
            ReferenceKind::SsmParameter => REFERENCE_RESOURCE_TYPES[2],
            ReferenceKind::ImageRecipe => REFERENCE_RESOURCE_TYPES[3],
            ReferenceKind::ContainerRecipe => REFERENCE_RESOURCE_TYPES[4],
        }
    }

    /// The ARN's service.
    fn service(&self) -> &'static str {
        match self {
            ReferenceKind::Instance { .. } | ReferenceKind::LaunchTemplate { .. } => "ec2",
            ReferenceKind::SsmParameter => "ssm",
            ReferenceKind::ImageRecipe | ReferenceKind::ContainerRecipe => "imagebuilder",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    pub(crate) image_id: String,
    pub(crate) kind: ReferenceKind,
    /// The ARN's resource part, e.g. `instance/i-0123456789abcdef0`.
    pub(crate) resource: String,
}

impl Reference {
    pub(crate) fn arn(&self, region: &str, account: &str) -> String {
        format!("arn:aws:{}:{region}:{account}:{}", self.kind.service(), self.resource)
    }

    pub(crate) fn view(&self, account: &str) -> ReferenceView {
        let (instance_state, launch_template_depth) = match &self.kind {
            ReferenceKind::Instance { state } => (Some(state.clone()), None),
            ReferenceKind::LaunchTemplate { depth } => (None, Some(*depth)),
            _ => (None, None),
        };
        ReferenceView {
            image_id: self.image_id.clone(),
            resource_type: self.kind.resource_type().to_string(),
            arn: self.arn(DEFAULT_REFERENCE_REGION, account),
            instance_state,
            launch_template_depth,
        }
    }
}

/// A reference as library users see it (`Simulator::references`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReferenceView {
    pub image_id: String,
    pub resource_type: String,
    /// In `DEFAULT_REFERENCE_REGION`; `arn_in` gives it for another Region.
    pub arn: String,
    /// For `ec2:Instance`: its state.
    pub instance_state: Option<String>,
    /// For `ec2:LaunchTemplate`: the version (1 = the newest) that uses the image, the least `version-depth` that
    /// finds it.
    pub launch_template_depth: Option<u32>,
}

impl ReferenceView {
    /// The ARN as a request signed for `region` gets it.
    pub fn arn_in(&self, region: &str) -> String {
        let mut parts: Vec<&str> = self.arn.splitn(5, ':').collect();
        if parts.len() == 5 {
            parts[3] = region;
        }
        parts.join(":")
    }
}

/// One `ResourceType.N` of a `DescribeImageReferences` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceTypeQuery {
    pub resource_type: String,
    /// `state-name` (ec2:Instance only); empty means every state.
    pub state_names: Vec<String>,
    /// `version-depth` (ec2:LaunchTemplate only); None means `DEFAULT_REFERENCE_VERSION_DEPTH`.
    pub version_depth: Option<u32>,
}

impl ReferenceTypeQuery {
    pub fn new(resource_type: &str) -> ReferenceTypeQuery {
        ReferenceTypeQuery { resource_type: resource_type.to_string(), state_names: Vec::new(), version_depth: None }
    }

    pub fn with_state_names(mut self, states: &[&str]) -> ReferenceTypeQuery {
        self.state_names = states.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn with_version_depth(mut self, depth: u32) -> ReferenceTypeQuery {
        self.version_depth = Some(depth);
        self
    }

    fn counts(&self, kind: &ReferenceKind) -> bool {
        match kind {
            ReferenceKind::Instance { state } => self.state_names.is_empty() || self.state_names.contains(state),
            ReferenceKind::LaunchTemplate { depth } => {
                *depth <= self.version_depth.unwrap_or(DEFAULT_REFERENCE_VERSION_DEPTH)
            }
            _ => true,
        }
    }
}

/// Which references a `DescribeImageReferences` request asks for: `IncludeAllResourceTypes` and the
/// `ResourceType.N` list. With both, every type is included, and the listed ones use their options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceQuery {
    pub include_all_resource_types: bool,
    pub resource_types: Vec<ReferenceTypeQuery>,
}

impl ReferenceQuery {
    /// `IncludeAllResourceTypes=true`: every type, default options.
    pub fn all() -> ReferenceQuery {
        ReferenceQuery { include_all_resource_types: true, resource_types: Vec::new() }
    }

    /// Only these types, with their options.
    pub fn of(resource_types: Vec<ReferenceTypeQuery>) -> ReferenceQuery {
        ReferenceQuery { include_all_resource_types: false, resource_types }
    }

    pub(crate) fn matches(&self, r: &Reference) -> bool {
        let rtype = r.kind.resource_type();
        match self.resource_types.iter().find(|q| q.resource_type == rtype) {
            Some(q) => q.counts(&r.kind),
            None => self.include_all_resource_types && ReferenceTypeQuery::new(rtype).counts(&r.kind),
        }
    }
}

/// The references stream of a dataset seed; the owner keeps drawing resource IDs from it for `add_reference`.
pub(crate) fn stream(seed: u64) -> SplitMix64 {
    SplitMix64::new(mix64(seed ^ DOMAIN_REFERENCES))
}

/// 17 lowercase hex digits, the shape of current instance and launch template IDs.
fn hex17(rng: &mut SplitMix64) -> String {
    let a = rng.next_u64();
    format!("{a:016x}{:x}", mix64(a) & 0xf)
}

/// The ARN resource part of a new resource of this kind; `label` names it (an image name or ID).
pub(crate) fn mint_resource(rng: &mut SplitMix64, kind: &ReferenceKind, label: &str, slot: usize) -> String {
    const SLOTS: [&str; 4] = ["latest", "stable", "previous", "canary"];
    match kind {
        ReferenceKind::Instance { .. } => format!("instance/i-{}", hex17(rng)),
        ReferenceKind::LaunchTemplate { .. } => format!("launch-template/lt-{}", hex17(rng)),
        ReferenceKind::SsmParameter => match SLOTS.get(slot) {
            Some(name) => format!("parameter/ami/{label}/{name}"),
            None => format!("parameter/ami/{label}/{}", &hex17(rng)[..8]),
        },
        ReferenceKind::ImageRecipe => format!("image-recipe/{label}-recipe-{}/1.0.0", slot + 1),
        ReferenceKind::ContainerRecipe => format!("container-recipe/{label}-container-{}/1.0.0", slot + 1),
    }
}

/// Running most of the time; every state occurs.
fn draw_instance_state(rng: &mut SplitMix64) -> &'static str {
    match rng.below(100) {
        0..40 => "running",
        40..60 => "stopped",
        60..75 => "terminated",
        75..85 => "pending",
        85..93 => "stopping",
        _ => "shutting-down",
    }
}

/// Mostly among the newest versions; a quarter beyond the default depth of 10, a few beyond usage reports' 20.
fn draw_depth(rng: &mut SplitMix64) -> u32 {
    let (lo, hi) = match rng.below(100) {
        0..50 => (1, 3),
        50..75 => (4, 10),
        75..95 => (11, 30),
        _ => (31, 2000),
    };
    rng.range_inclusive(lo, hi) as u32
}

/// Images that have no reference at all: every fifth from index 3 (3, 8, 13, …), the never-launched ones.
pub(crate) fn unreferenced(index: usize) -> bool {
    crate::facts::never_launched(index)
}

/// Every fifth image from index 0 (0, 5, 10, …) has every kind: 2 to 4 instances, the first `running` and the
/// second `stopped`; 2 to 4 launch templates, the first found only beyond depth 10 (11 to 30), the second within
/// the newest three versions; 1 to 4 of each other type.
fn fully_referenced(index: usize) -> bool {
    index.is_multiple_of(5)
}

fn kinds_of(rng: &mut SplitMix64, index: usize) -> Vec<ReferenceKind> {
    let mut kinds = Vec::new();
    for (t, _) in REFERENCE_RESOURCE_TYPES.iter().enumerate() {
        let full = fully_referenced(index);
        let count = match (full, t) {
            (true, 0 | 1) => rng.range_inclusive(2, 4),
            (true, _) => rng.range_inclusive(1, 4),
            (false, _) if rng.chance(1, 3) => 0,
            (false, _) => rng.range_inclusive(1, 4),
        };
        for k in 0..count {
            kinds.push(match t {
                0 => {
                    let state = match (full, k) {
                        (true, 0) => "running",
                        (true, 1) => "stopped",
                        _ => draw_instance_state(rng),
                    };
                    ReferenceKind::Instance { state: state.to_string() }
                }
                1 => {
                    let depth = match (full, k) {
                        (true, 0) => rng.range_inclusive(11, 30) as u32,
                        (true, 1) => rng.range_inclusive(1, 3) as u32,
                        _ => draw_depth(rng),
                    };
                    ReferenceKind::LaunchTemplate { depth }
                }
                2 => ReferenceKind::SsmParameter,
                3 => ReferenceKind::ImageRecipe,
                _ => ReferenceKind::ContainerRecipe,
            });
        }
    }
    kinds
}

/// The dataset's references to its own images, and the stream to draw later resource IDs from.
pub(crate) fn generate(seed: u64, images: &[Image]) -> (Vec<Reference>, SplitMix64) {
    let mut rng = stream(seed);
    let mut out = Vec::new();
    for (index, image) in images.iter().enumerate() {
        if unreferenced(index) {
            continue;
        }
        let mut slots = [0usize; REFERENCE_RESOURCE_TYPES.len()];
        for kind in kinds_of(&mut rng, index) {
            let t = REFERENCE_RESOURCE_TYPES.iter().position(|rt| *rt == kind.resource_type()).unwrap_or(0);
            let resource = mint_resource(&mut rng, &kind, &image.name, slots[t]);
            slots[t] += 1;
            out.push(Reference { image_id: image.id.clone(), kind, resource });
        }
    }
    (out, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: usize) -> Image {
        Image {
            id: format!("ami-{n:017x}"),
            name: format!("golden-base-{}", n + 1),
            owner_id: "111111111111".into(),
            creation_date: std::time::SystemTime::UNIX_EPOCH,
            architecture: "x86_64",
            tags: Vec::new(),
            state: "available".into(),
            public: false,
            deprecation_time: None,
            last_launched_time: None,
        }
    }

    fn of<'a>(refs: &'a [Reference], image: &Image) -> Vec<&'a Reference> {
        refs.iter().filter(|r| r.image_id == image.id).collect()
    }

    #[test]
    fn the_rules_by_index() {
        let images: Vec<Image> = (0..200).map(image).collect();
        let (refs, _) = generate(1, &images);
        for (index, image) in images.iter().enumerate() {
            let mine = of(&refs, image);
            let count = |rt: &str| mine.iter().filter(|r| r.kind.resource_type() == rt).count();
            if unreferenced(index) {
                assert!(mine.is_empty(), "{index}");
                continue;
            }
            assert!(REFERENCE_RESOURCE_TYPES.iter().all(|rt| count(rt) <= 4), "{index}");
            if fully_referenced(index) {
                assert!((2..=4).contains(&count(INSTANCE)) && (2..=4).contains(&count(LAUNCH_TEMPLATE)));
                assert!(REFERENCE_RESOURCE_TYPES.iter().all(|rt| count(rt) >= 1));
                let instances: Vec<&ReferenceKind> =
                    mine.iter().map(|r| &r.kind).filter(|k| k.resource_type() == INSTANCE).collect();
                assert_eq!(instances[0], &ReferenceKind::Instance { state: "running".into() });
                assert_eq!(instances[1], &ReferenceKind::Instance { state: "stopped".into() });
                let depths: Vec<u32> = mine
                    .iter()
                    .filter_map(|r| match r.kind {
                        ReferenceKind::LaunchTemplate { depth } => Some(depth),
                        _ => None,
                    })
                    .collect();
                assert!((11..=30).contains(&depths[0]) && (1..=3).contains(&depths[1]), "{depths:?}");
            }
        }
        // Every state and every depth band occurs; some referenced images lack some types.
        for state in INSTANCE_STATES {
            assert!(refs.iter().any(|r| r.kind == ReferenceKind::Instance { state: state.into() }), "{state}");
        }
        let depth = |lo: u32, hi: u32| {
            refs.iter().any(|r| matches!(r.kind, ReferenceKind::LaunchTemplate { depth } if (lo..=hi).contains(&depth)))
        };
        assert!(depth(1, 10) && depth(11, 20) && depth(21, 10_000));
        let arns: std::collections::BTreeSet<String> = refs.iter().map(|r| r.arn("us-east-1", "1")).collect();
        assert_eq!(arns.len(), refs.len(), "every resource is its own");
    }

    #[test]
    fn arns_look_like_aws_ones() {
        let images = [image(0)];
        let (refs, _) = generate(3, &images);
        let arn =
            |rt: &str| refs.iter().find(|r| r.kind.resource_type() == rt).unwrap().arn("eu-west-1", "123456789012");
        let instance = arn(INSTANCE);
        assert!(instance.starts_with("arn:aws:ec2:eu-west-1:123456789012:instance/i-"), "{instance}");
        assert_eq!(instance.len(), "arn:aws:ec2:eu-west-1:123456789012:instance/i-".len() + 17);
        assert!(arn(LAUNCH_TEMPLATE).starts_with("arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-"));
        assert_eq!(arn("ssm:Parameter"), "arn:aws:ssm:eu-west-1:123456789012:parameter/ami/golden-base-1/latest");
        assert_eq!(
            arn("imagebuilder:ImageRecipe"),
            "arn:aws:imagebuilder:eu-west-1:123456789012:image-recipe/golden-base-1-recipe-1/1.0.0"
        );
        assert_eq!(
            arn("imagebuilder:ContainerRecipe"),
            "arn:aws:imagebuilder:eu-west-1:123456789012:container-recipe/golden-base-1-container-1/1.0.0"
        );
        let view = refs[0].view("123456789012");
        assert_eq!(view.arn_in("eu-west-1"), refs[0].arn("eu-west-1", "123456789012"));
        assert!(view.arn.contains(":us-east-1:"));
    }

    #[test]
    fn queries_count_what_they_ask_for() {
        let r = |kind: ReferenceKind| Reference { image_id: "ami-1".into(), kind, resource: String::new() };
        let running = r(ReferenceKind::Instance { state: "running".into() });
        let deep = r(ReferenceKind::LaunchTemplate { depth: 11 });
        let shallow = r(ReferenceKind::LaunchTemplate { depth: 10 });
        let ssm = r(ReferenceKind::SsmParameter);
        let all = ReferenceQuery::all();
        assert!(all.matches(&running) && all.matches(&shallow) && all.matches(&ssm) && !all.matches(&deep));
        let only = ReferenceQuery::of(vec![ReferenceTypeQuery::new(INSTANCE).with_state_names(&["stopped"])]);
        assert!(!only.matches(&running) && !only.matches(&ssm));
        let deeper = ReferenceQuery::of(vec![ReferenceTypeQuery::new(LAUNCH_TEMPLATE).with_version_depth(11)]);
        assert!(deeper.matches(&deep) && !deeper.matches(&running));
        let both = ReferenceQuery { include_all_resource_types: true, ..deeper };
        assert!(both.matches(&deep) && both.matches(&running) && both.matches(&ssm));
    }

    #[test]
    fn same_seed_same_references() {
        let images: Vec<Image> = (0..20).map(image).collect();
        assert_eq!(generate(4, &images).0, generate(4, &images).0);
        assert_ne!(generate(4, &images).0, generate(5, &images).0);
    }
}
