// Access to the existing Azure ML workspace (deployed into the workspace's resource group):
// - the apps' identity as AzureML Data Scientist (submit and read jobs, register models, update the
//   online endpoint's deployment, export a labeling project's labels; it cannot create compute or change
//   the workspace);
// - identity-based datastores on the loop's items and labeling-input containers, so the labeling
//   project reads the selector's input folder and training reads items by datastore URI;
// - the training compute cluster training/job.yml runs on: scales to zero, runs as its own user-assigned
//   identity, which reads the items datastore and the manifests (Storage Blob Data Reader on the loop's
//   account, storage-roles.bicep): the datastores hold no credential, so the job reads with that identity;
// - AzureML Data Scientist for the training workflow's identity (GitHub OIDC, github-identity.bicep).

param workspaceName string
param appPrincipalId string

@description('Loop storage account and containers the datastores point at.')
param storageAccountName string
param itemsContainer string
param labelingContainer string

@description('Datastore names; empty: do not create that datastore.')
param itemsDatastoreName string = ''
param labelingDatastoreName string = ''

@description('Principal id of the training workflow\'s identity (GitHub OIDC); empty: no grant.')
param workflowPrincipalId string = ''

@description('The training compute cluster (AmlCompute) and the user-assigned identity it runs as.')
param computeName string
param computeIdentityId string
param computeVmSize string = 'Standard_DS3_v2'
@minValue(1)
param computeMaxNodes int = 1

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

var azureMLDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'

resource dataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, appPrincipalId, azureMLDataScientist)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
  }
}

// The training workflow submits the job, follows it and registers the model it produced.
resource workflowDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workflowPrincipalId)) {
  scope: workspace
  name: guid(workspace.id, workflowPrincipalId, azureMLDataScientist)
  properties: {
    principalId: workflowPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
  }
}

resource itemsDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = if (!empty(itemsDatastoreName)) {
  parent: workspace
  name: empty(itemsDatastoreName) ? 'unused-items' : itemsDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageAccountName
    containerName: itemsContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: { credentialsType: 'None' }
    description: 'Active-learning loop: content-addressed items (scoring_collector)'
  }
}

resource labelingDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = if (!empty(labelingDatastoreName)) {
  parent: workspace
  name: empty(labelingDatastoreName) ? 'unused-labeling' : labelingDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageAccountName
    containerName: labelingContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: { credentialsType: 'None' }
    description: 'Active-learning loop: the labeling project\'s input folder (selector_timer)'
  }
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2024-04-01' = {
  parent: workspace
  name: computeName
  location: workspace.location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${computeIdentityId}': {} }
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'Active-learning loop: retraining (training/job.yml)'
    properties: {
      vmSize: computeVmSize
      vmPriority: 'Dedicated'
      osType: 'Linux'
      scaleSettings: {
        minNodeCount: 0 // nothing runs, nothing is billed, between retrainings
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT120S'
      }
      remoteLoginPortPublicAccess: 'Disabled'
    }
  }
}

output workspacePrincipalId string = workspace.identity.principalId
output computeName string = compute.name
