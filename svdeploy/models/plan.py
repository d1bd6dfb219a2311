"""The block plan of SVD's U-Net (sgm ``VideoUNet``), derived once from a UNetConfig.

sgm's U-Net is three lists of blocks, ``input_blocks``, ``middle_block`` and ``output_blocks``;
each block is a short sequence of layers run in order (a ``TimestepEmbedSequential``):

    input_blocks.0             conv_in                                  in → C₀
    input_blocks.i (level l)   resnet Cin→Cₗ [+ transformer Cₗ]          per res block
                               downsample Cₗ                             after each level
                                                                        but the last
    middle_block               resnet, transformer, resnet               at the last level
    output_blocks.i (level l)  resnet (C + skip)→Cₗ [+ transformer]      levels reversed, one more
                               [+ upsample Cₗ]                            res block per level

Each output block concatenates the output of one input block (last in, first out) before its
resnet; that is its ``skip_channels``. A level has attention when its downsampling factor 2ˡ is
in ``attention_resolutions``; the middle block always has.

The MindSpore cells (unet.py), the parameter table (keys.py), the diffusers names (keymap.py)
and the FLOP counter (benchmarks/flops.py) all walk this plan, so the structure is written here
only. Pure Python: no MindSpore, nothing allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

from svdeploy.config import UNetConfig

# Layer kinds. Each is one sgm module, named ``<block>.<position in the block>``.
CONV_IN = "conv_in"  # the first 3×3 convolution (input_blocks.0.0)
RESNET = "resnet"  # VideoResBlock: spatial ResBlock + temporal ResBlock + mix
TRANSFORMER = "transformer"  # SpatialVideoTransformer (spatial + temporal attention)
DOWNSAMPLE = "downsample"  # 3×3 convolution, stride 2 (parameters under ``.op``)
UPSAMPLE = "upsample"  # nearest ×2, then a 3×3 convolution (parameters under ``.conv``)

# Block sections: sgm's three lists.
INPUT, MIDDLE, OUTPUT = "input", "middle", "output"


@dataclass(frozen=True)
class Level:
    """One resolution of the U-Net: level l runs at 1/2ˡ of the latent size."""

    index: int
    channels: int  # model_channels · channel_mult[index]
    factor: int  # 2ˡ: the downsampling factor attention_resolutions is written in
    attention: bool  # its res blocks are followed by a spatio-temporal transformer


@dataclass(frozen=True)
class Layer:
    """One module of a block, under both its names."""

    kind: str
    # Stability's module name relative to the U-Net ("input_blocks.1.0"): what the MindSpore
    # cell calls it; checkpoints add the network prefix (keys.NETWORK_PREFIXES["unet"]).
    sgm: str
    diffusers: str  # UNetSpatioTemporalConditionModel's module name ("down_blocks.0.resnets.0")
    channels_in: int
    channels_out: int


@dataclass(frozen=True)
class Block:
    """One entry of input_blocks / output_blocks, or the middle block."""

    section: str
    index: int  # position in its section's list (0 for the middle block)
    level: int  # the level it runs at (a downsampler: the level it leaves)
    layers: Tuple[Layer, ...]
    skip_channels: int = 0  # channels concatenated from an input block (output blocks only)

    @property
    def sgm(self) -> str:
        return "middle_block" if self.section == MIDDLE else f"{self.section}_blocks.{self.index}"

    @property
    def channels_in(self) -> int:
        """What the block's first layer takes: the previous block's output plus the skip."""
        return self.layers[0].channels_in

    @property
    def channels_out(self) -> int:
        return self.layers[-1].channels_out

    @property
    def has_attention(self) -> bool:
        return any(layer.kind == TRANSFORMER for layer in self.layers)


@dataclass(frozen=True)
class UNetPlan:
    levels: Tuple[Level, ...]
    input_blocks: Tuple[Block, ...]
    middle_block: Block
    output_blocks: Tuple[Block, ...]

    def blocks(self) -> Tuple[Block, ...]:
        """Every block in the order the U-Net runs them (and sgm builds them)."""
        return self.input_blocks + (self.middle_block,) + self.output_blocks

    def layers(self) -> Iterator[Layer]:
        for block in self.blocks():
            yield from block.layers

    @property
    def channels_out(self) -> int:
        """The width the ``out`` head normalises: the last output block's."""
        return self.output_blocks[-1].channels_out


def unet_plan(cfg: UNetConfig) -> UNetPlan:
    levels = tuple(
        Level(index, cfg.model_channels * mult, 2**index, 2**index in cfg.attention_resolutions)
        for index, mult in enumerate(cfg.channel_mult)
    )
    input_blocks = _input_blocks(cfg, levels)
    middle = levels[-1]
    ch = middle.channels
    middle_block = Block(
        MIDDLE,
        0,
        middle.index,
        (
            Layer(RESNET, "middle_block.0", "mid_block.resnets.0", ch, ch),
            Layer(TRANSFORMER, "middle_block.1", "mid_block.attentions.0", ch, ch),
            Layer(RESNET, "middle_block.2", "mid_block.resnets.1", ch, ch),
        ),
    )
    output_blocks = _output_blocks(cfg, levels, input_blocks)
    return UNetPlan(levels, input_blocks, middle_block, output_blocks)


def _res_layers(
    block: str, diffusers: str, j: int, level: Level, channels_in: int, upsample: bool = False
) -> Tuple[Layer, ...]:
    """resnet → level width, its transformer where the level has attention, an upsampler.

    diffusers groups a level's layers by kind: block j's resnet is ``resnets.j``, its
    transformer ``attentions.j``; the level has one ``downsamplers.0`` / ``upsamplers.0``.
    """
    ch = level.channels
    layers = [Layer(RESNET, f"{block}.0", f"{diffusers}.resnets.{j}", channels_in, ch)]
    if level.attention:
        layers.append(Layer(TRANSFORMER, f"{block}.1", f"{diffusers}.attentions.{j}", ch, ch))
    if upsample:
        layers.append(
            Layer(UPSAMPLE, f"{block}.{len(layers)}", f"{diffusers}.upsamplers.0", ch, ch)
        )
    return tuple(layers)


def _input_blocks(cfg: UNetConfig, levels: Sequence[Level]) -> Tuple[Block, ...]:
    mc = cfg.model_channels
    blocks = [
        Block(INPUT, 0, 0, (Layer(CONV_IN, "input_blocks.0.0", "conv_in", cfg.in_channels, mc),))
    ]
    ch = mc
    for level in levels:
        down = f"down_blocks.{level.index}"
        for j in range(cfg.num_res_blocks):
            index = len(blocks)
            blocks.append(
                Block(
                    INPUT,
                    index,
                    level.index,
                    _res_layers(f"input_blocks.{index}", down, j, level, ch),
                )
            )
            ch = level.channels
        if level.index != len(levels) - 1:
            index = len(blocks)
            downsample = Layer(
                DOWNSAMPLE, f"input_blocks.{index}.0", f"{down}.downsamplers.0", ch, ch
            )
            blocks.append(Block(INPUT, index, level.index, (downsample,)))
    return tuple(blocks)


def _output_blocks(
    cfg: UNetConfig, levels: Sequence[Level], input_blocks: Sequence[Block]
) -> Tuple[Block, ...]:
    """Levels deepest first (diffusers' up_blocks.0 is the deepest), num_res_blocks + 1 blocks
    each, the last with an upsampler except at level 0."""
    skips: List[int] = [block.channels_out for block in input_blocks]
    ch = levels[-1].channels
    blocks: List[Block] = []
    for up, level in enumerate(reversed(levels)):
        for j in range(cfg.num_res_blocks + 1):
            skip = skips.pop()  # last in, first out
            index = len(blocks)
            upsample = level.index > 0 and j == cfg.num_res_blocks
            layers = _res_layers(
                f"output_blocks.{index}", f"up_blocks.{up}", j, level, ch + skip, upsample
            )
            blocks.append(Block(OUTPUT, index, level.index, layers, skip))
            ch = level.channels
    return tuple(blocks)
