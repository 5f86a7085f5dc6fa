"""medcf.classifiers"""
