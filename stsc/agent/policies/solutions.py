"""Self-contained scikit-learn solution scripts written by the scripted policy.

A script reads ``data/train.csv``, ``data/validation.csv``, ``data/test.csv`` and
``sample_submission.csv`` from the workspace, infers the target (the training column missing from
the test file), the id columns (columns of the sample submission present in the test file) and the
feature types (numeric, categorical, free text), reports a validation score, refits on train plus
validation and writes ``submission.csv`` in the sample submission's layout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelChoice:
    key: str  # file stem: model_<key>.py
    title: str  # words used in discussions
    imports: str
    estimator: str  # expression building the estimator
    dense: bool  # needs a dense feature matrix


CLASSIFIERS = (
    ModelChoice(
        "hist_gradient_boosting",
        "a histogram gradient boosting classifier",
        "from sklearn.ensemble import HistGradientBoostingClassifier",
        "HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)",
        dense=True,
    ),
    ModelChoice(
        "random_forest",
        "a random forest classifier",
        "from sklearn.ensemble import RandomForestClassifier",
        "RandomForestClassifier(n_estimators=300, min_samples_leaf=1, random_state=0)",
        dense=False,
    ),
    ModelChoice(
        "logistic_regression",
        "a logistic regression on standardized features",
        "from sklearn.linear_model import LogisticRegression",
        "LogisticRegression(max_iter=2000, C=1.0)",
        dense=False,
    ),
)

REGRESSORS = (
    ModelChoice(
        "hist_gradient_boosting",
        "a histogram gradient boosting regressor",
        "from sklearn.ensemble import HistGradientBoostingRegressor",
        "HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0)",
        dense=True,
    ),
    ModelChoice(
        "random_forest",
        "a random forest regressor",
        "from sklearn.ensemble import RandomForestRegressor",
        "RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=0)",
        dense=False,
    ),
    ModelChoice(
        "ridge",
        "a ridge regression on standardized features",
        "from sklearn.linear_model import Ridge",
        "Ridge(alpha=1.0)",
        dense=False,
    ),
)

_SCRIPT = '''"""Train {title} and write submission.csv."""

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
{imports}

TASK_TYPE = "{task_type}"  # "classification", "regression" or "auto"
DENSE = {dense}

train = pd.read_csv("data/train.csv")
valid = pd.read_csv("data/validation.csv")
test = pd.read_csv("data/test.csv")
sample = pd.read_csv("sample_submission.csv")

target = [c for c in train.columns if c not in test.columns][0]
id_columns = [c for c in sample.columns if c in test.columns]
prediction_columns = [c for c in sample.columns if c not in test.columns] or [target]
features = [c for c in test.columns if c in train.columns and c not in id_columns]
features = [c for c in features if c.lower() != "id"]
if TASK_TYPE == "auto":
    numeric_target = pd.api.types.is_float_dtype(train[target])
    TASK_TYPE = "regression" if numeric_target and train[target].nunique() > 20 else "classification"

numeric = [c for c in features if pd.api.types.is_numeric_dtype(train[c])]
others = [c for c in features if c not in numeric]
text = [c for c in others if train[c].astype(str).str.len().mean() > 30]
categorical = [c for c in others if c not in text]

parts = []
if numeric:
    parts.append(("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
if categorical:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=not DENSE)
    parts.append(("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), encoder), categorical))
for column in text:
    parts.append((f"text_{{column}}", TfidfVectorizer(max_features=500 if DENSE else 5000), column))
preprocess = ColumnTransformer(parts, sparse_threshold=0.0 if DENSE else 0.3)


def prepare(frame):
    frame = frame[features].copy()
    for column in text + categorical:
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def build():
    return make_pipeline(preprocess, {estimator})


model = build()
model.fit(prepare(train), train[target])
if target in valid.columns:
    predicted = model.predict(prepare(valid))
    if TASK_TYPE == "classification":
        print(f"validation accuracy: {{accuracy_score(valid[target], predicted):.4f}}")
    else:
        print(f"validation r2: {{r2_score(valid[target], predicted):.4f}}")
    full = pd.concat([train, valid], ignore_index=True)
    model = build()
    model.fit(prepare(full), full[target])

submission = test[id_columns].copy()
classes = [str(c) for c in getattr(model, "classes_", [])]
if TASK_TYPE == "classification" and len(prediction_columns) > 1 and set(prediction_columns) <= set(classes):
    probabilities = model.predict_proba(prepare(test))
    for column in prediction_columns:
        submission[column] = probabilities[:, classes.index(column)]
elif (
    TASK_TYPE == "classification"
    and len(classes) == 2
    and pd.api.types.is_float_dtype(sample[prediction_columns[0]])
    and not pd.api.types.is_float_dtype(train[target])
):
    submission[prediction_columns[0]] = model.predict_proba(prepare(test))[:, 1]
else:
    submission[prediction_columns[0]] = model.predict(prepare(test))
submission[list(sample.columns)].to_csv("submission.csv", index=False)
print(f"wrote submission.csv with {{len(submission)}} rows")
'''


def solution_script(choice: ModelChoice, task_type: str) -> str:
    """The full source of ``model_<choice.key>.py`` for ``task_type`` (classification,
    regression or auto)."""
    return _SCRIPT.format(
        title=choice.title,
        imports=choice.imports,
        estimator=choice.estimator,
        dense=choice.dense,
        task_type=task_type,
    )


def choices_for(task_type: str) -> tuple[ModelChoice, ...]:
    return REGRESSORS if task_type == "regression" else CLASSIFIERS
