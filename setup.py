"""vit_compress: train Vision Transformers and make them smaller and faster (JAX/Flax)."""
import setuptools

setuptools.setup(
    name='vit_compress',
    version='0.1.0',
    description=('A JAX/Flax framework that trains Vision Transformers and '
                 'compresses them: distillation, pruning, quantization, '
                 'low-rank, token merging, measured on accuracy and speed.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['vit_compress', 'vit_compress.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.6,<0.11',
        'flax>=0.10.6,<0.13',
        'optax>=0.2.4,<0.3',
        'ml-collections>=1.0,<2',
        'orbax-checkpoint>=0.11,<0.13',
        'clu>=0.0.12,<0.1',
        'absl-py>=2.1,<3',
        'numpy>=1.26,<3',
        'tensorflow-cpu>=2.18,<2.22',
        'tensorflow-datasets>=4.9.7,<5',
        'qwix>=0.1.5,<0.2',
        'scikit-learn>=1.5,<2',
        'scipy>=1.13,<2',
        'matplotlib>=3.9,<4',
        'sentencepiece>=0.2,<0.3',
        'pillow>=10',
        'importlib_resources>=6',  # TFDS prepares packaged builders with it
        'tensorboard>=2.18,<3',
        'safetensors>=0.4,<1',  # timm (PyTorch) weights, read with numpy
        'ai-edge-litert>=1.2,<3',  # the TFLite (LiteRT) interpreter  # clu's metric writers (event files)
        'jax2onnx>=0.17,<0.18',    # JAX -> ONNX (its plugin API moves between minors)
        'onnx>=1.17,<2',
        'onnxruntime>=1.20,<2',    # runs and quantizes (dynamic, static QDQ) the ONNX files
    ],
    extras_require={
        # bench/mobilevit_timm_logits.py only: the package never imports them.
        'timm': ['torch>=2.1', 'timm>=1.0,<2'],
        'test': [
            'pytest>=8,<10',
            'pytest-xdist>=3.6,<4',
            'nbclient>=0.10,<0.12',
            'nbformat>=5.10,<6',
            'ipykernel>=6.29,<8',
        ],
        # bench/vs_pytorch.py's baseline only; never imported by the package.
        'bench': [
            'torch>=2.4,<3',
            'timm>=1.0,<2',
        ],
    },
)
