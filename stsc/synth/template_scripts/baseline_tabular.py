"""Baseline of this task: a deliberately small decision tree.

It uses the numeric columns and the categorical columns with few levels, fills gaps with the median,
fits a shallow decision tree on data/train.csv and writes predictions for data/test.csv to
submission.csv. Better features, models and tuning (data/validation.csv holds labelled rows for
model selection) should beat it.
"""

import pandas as pd
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

SPEC = {"id_column": "id", "target": "target", "task_type": "classification", "max_depth": 1}
MAX_LEVELS = 20


def design_matrix(train, test, columns):
    both = pd.concat([train[columns], test[columns]], keys=["train", "test"])
    keep = [c for c in columns if pd.api.types.is_numeric_dtype(both[c]) or both[c].nunique() <= MAX_LEVELS]
    matrix = pd.get_dummies(both[keep], dtype=float).astype(float)
    matrix = matrix.fillna(matrix.median()).fillna(0.0)
    return matrix.loc["train"], matrix.loc["test"]


def labels(train):
    """The training labels; class labels exactly as written ("None", "NA" and "null" are classes
    here, not missing values)."""
    if SPEC["task_type"] != "classification":
        return train[SPEC["target"]]
    text = pd.read_csv("data/train.csv", usecols=[SPEC["target"]], dtype=str, keep_default_na=False)
    return text[SPEC["target"]]


def main():
    train = pd.read_csv("data/train.csv")
    test = pd.read_csv("data/test.csv")
    columns = [c for c in test.columns if c != SPEC["id_column"]]
    x_train, x_test = design_matrix(train, test, columns)
    if SPEC["task_type"] == "classification":
        model = DecisionTreeClassifier(max_depth=SPEC["max_depth"], random_state=0)
    else:
        model = DecisionTreeRegressor(max_depth=SPEC["max_depth"], random_state=0)
    model.fit(x_train, labels(train))
    submission = pd.DataFrame(
        {SPEC["id_column"]: test[SPEC["id_column"]], SPEC["target"]: model.predict(x_test)}
    )
    submission.to_csv("submission.csv", index=False)


if __name__ == "__main__":
    main()
