"""jumpnet-stream: turn gameplay recordings into balanced behaviour-cloning datasets, streaming."""

from .batches import batches
from .chunk import Chunk
from .errors import JumpnetError
from .formats import create_dataset, open_dataset
from .recording import Recording
from .schema import FIELDS as SAMPLE_FIELDS
from .stages.preprocess import PreprocessReport, pair_jumps, preprocess
from .training_set import ChunkBatchSampler, ChunkShuffleSampler, SharedBatchRing, TrainingSet

__version__ = "0.1.0"

__all__ = ["SAMPLE_FIELDS", "Chunk", "ChunkBatchSampler", "ChunkShuffleSampler", "SharedBatchRing", "TrainingSet",
           "batches",
           "JumpnetError", "PreprocessReport", "Recording", "create_dataset",
           "open_dataset", "pair_jumps", "preprocess", "__version__"]
